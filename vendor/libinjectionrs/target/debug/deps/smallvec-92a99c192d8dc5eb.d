/work/main/vendor/libinjectionrs/target/debug/deps/smallvec-92a99c192d8dc5eb.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/smallvec-1.16.6/src/lib.rs

/work/main/vendor/libinjectionrs/target/debug/deps/libsmallvec-92a99c192d8dc5eb.rlib: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/smallvec-1.16.6/src/lib.rs

/work/main/vendor/libinjectionrs/target/debug/deps/libsmallvec-92a99c192d8dc5eb.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/smallvec-1.16.6/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/smallvec-1.16.6/src/lib.rs:
