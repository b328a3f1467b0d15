# livectx container image: build with the Rust toolchain, run on a slim Debian as a non-root user.
#   docker build -t livectx .
#   docker run -p 8000:8000 -e LIVECTX_API_KEY=... -e AUTOPLAY_STREAM_URL=... -e AUTOPLAY_API_TOKEN=... livectx

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin livectx

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data livectx \
    && mkdir -p /data && chown livectx /data
COPY --from=build /src/target/release/livectx /usr/local/bin/livectx
USER 10001
ENV LIVECTX_LISTEN=0.0.0.0:8000 \
    LIVECTX_DATA_DIR=/data \
    LIVECTX_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=5s --retries=3 CMD ["livectx", "healthcheck"]
ENTRYPOINT ["livectx"]
CMD ["serve"]
