# sidechat: build in the Rust image, run in a slim Debian with libpq and CA certificates.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# make: tikv-jemalloc-sys builds jemalloc (the server's allocator) with configure and make.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libpq-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# The dependencies in a layer of their own: rebuilt only when Cargo.toml or Cargo.lock
# change, not on every edit of src/.
# (Every target the manifest names must exist, so the benchmark program and the
# micro-benchmarks get stubs too; the image holds only the service. The benches stub
# stays for the real build below, which does not copy benches/.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/sidechat-bench benches \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/sidechat-bench/main.rs \
 && echo 'fn main() {}' > benches/codec.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin sidechat \
 && rm -rf src target/release/sidechat target/release/deps/sidechat-* \
      target/release/deps/libsidechat-* target/release/.fingerprint/sidechat-*

COPY migrations migrations
COPY config config
COPY assets assets
COPY src src
RUN cargo build --release --locked --bin sidechat \
 && strip target/release/sidechat

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sidechat
COPY --from=build /src/target/release/sidechat /usr/local/bin/sidechat
# Runs as an unprivileged user and writes nothing: a read-only root filesystem is fine.
USER 10001:10001
EXPOSE 4000
ENTRYPOINT ["/usr/local/bin/sidechat"]
CMD ["serve"]
