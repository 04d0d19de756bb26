/work/main/vendor/libinjectionrs/target/debug/deps/libinjectionrs-aa5dfe9791957103.d: src/lib.rs src/sqli/mod.rs src/sqli/tokenizer.rs src/sqli/blacklist.rs src/sqli/sqli_data.rs src/xss.rs src/xss/detector.rs src/xss/html5.rs src/xss/blacklists.rs src/sqli/generated_data.rs

/work/main/vendor/libinjectionrs/target/debug/deps/liblibinjectionrs-aa5dfe9791957103.rlib: src/lib.rs src/sqli/mod.rs src/sqli/tokenizer.rs src/sqli/blacklist.rs src/sqli/sqli_data.rs src/xss.rs src/xss/detector.rs src/xss/html5.rs src/xss/blacklists.rs src/sqli/generated_data.rs

/work/main/vendor/libinjectionrs/target/debug/deps/liblibinjectionrs-aa5dfe9791957103.rmeta: src/lib.rs src/sqli/mod.rs src/sqli/tokenizer.rs src/sqli/blacklist.rs src/sqli/sqli_data.rs src/xss.rs src/xss/detector.rs src/xss/html5.rs src/xss/blacklists.rs src/sqli/generated_data.rs

src/lib.rs:
src/sqli/mod.rs:
src/sqli/tokenizer.rs:
src/sqli/blacklist.rs:
src/sqli/sqli_data.rs:
src/xss.rs:
src/xss/detector.rs:
src/xss/html5.rs:
src/xss/blacklists.rs:
src/sqli/generated_data.rs:

# env-dep:CARGO_PKG_VERSION=0.1.1
