# livectx: multi-stage build, small non-root runtime image.
# Untested here (no Docker on the build machine); see deploy/docker-compose.yml.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Everything but what .dockerignore leaves out (target/, .git/, deploy/).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin livectx \
    && cp target/release/livectx /livectx \
    && strip /livectx

FROM debian:bookworm-slim
# ca-certificates: TLS to the connector and the LLM; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin livectx
COPY --from=build /livectx /usr/local/bin/livectx
USER 10001:10001
ENV LIVECTX_LISTEN=0.0.0.0:8000 \
    LIVECTX_LOG_FORMAT=json
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz >/dev/null || exit 1
ENTRYPOINT ["livectx"]
CMD ["serve"]
