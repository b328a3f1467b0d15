# livectx: multi-stage build, small non-root runtime image.
#   docker build -t livectx .
#   docker run -p 8000:8000 -e LIVECTX_API_KEY=... -e AUTOPLAY_STREAM_URL=... -e AUTOPLAY_API_TOKEN=... \
#     -e LIVECTX_DATA_DIR=/data -v livectx-data:/data livectx
# Untested here (no Docker engine on the build machine); see deploy/docker-compose.yml for replicas on Redis.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Everything but what .dockerignore leaves out (target/, .git/, deploy/, fuzz output).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin livectx \
    && cp target/release/livectx /livectx \
    && strip /livectx

FROM debian:bookworm-slim
# ca-certificates: TLS to the connector and the LLM. No curl: `livectx healthcheck` probes itself.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin livectx \
    && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /livectx /usr/local/bin/livectx
USER 10001:10001
# Single node: set LIVECTX_DATA_DIR=/data (and mount a volume there) to keep sessions across restarts.
ENV LIVECTX_LISTEN=0.0.0.0:8000 \
    LIVECTX_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["livectx", "healthcheck"]
ENTRYPOINT ["livectx"]
CMD ["serve"]
