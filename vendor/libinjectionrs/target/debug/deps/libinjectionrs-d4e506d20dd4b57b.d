/work/main/vendor/libinjectionrs/target/debug/deps/libinjectionrs-d4e506d20dd4b57b.d: src/lib.rs src/sqli/mod.rs src/sqli/tokenizer.rs src/sqli/blacklist.rs src/sqli/sqli_data.rs src/sqli/tests.rs src/xss.rs src/xss/detector.rs src/xss/html5.rs src/xss/blacklists.rs src/xss/tests.rs src/sqli/generated_data.rs

/work/main/vendor/libinjectionrs/target/debug/deps/libinjectionrs-d4e506d20dd4b57b: src/lib.rs src/sqli/mod.rs src/sqli/tokenizer.rs src/sqli/blacklist.rs src/sqli/sqli_data.rs src/sqli/tests.rs src/xss.rs src/xss/detector.rs src/xss/html5.rs src/xss/blacklists.rs src/xss/tests.rs src/sqli/generated_data.rs

src/lib.rs:
src/sqli/mod.rs:
src/sqli/tokenizer.rs:
src/sqli/blacklist.rs:
src/sqli/sqli_data.rs:
src/sqli/tests.rs:
src/xss.rs:
src/xss/detector.rs:
src/xss/html5.rs:
src/xss/blacklists.rs:
src/xss/tests.rs:
src/sqli/generated_data.rs:

# env-dep:CARGO_PKG_VERSION=0.1.1
