# syntax=docker/dockerfile:1
#
# tacit-server container image (docs/DEPLOYMENT.md, "Container").
#
#   docker build -t tacit-server .
#   docker run -d --name tacit -p 8443:8443 -v tacit-data:/var/lib/tacit tacit-server
#
# Two stages: the release build on Debian bookworm, then the binary alone on distroless
# (glibc and libgcc only, no shell, no package manager), running as the distroless
# `nonroot` user 65532.

FROM rust:1.89-slim-bookworm AS builder
# The slim Rust image already carries gcc and libc6-dev, which is all the build needs: ring
# and the bundled SQLite (libsqlite3-sys) compile C with them; TLS is rustls, so no OpenSSL
# and no pkg-config.
WORKDIR /src
COPY . .
# The caches keep the crate downloads and the target directory between builds; the binary
# is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p tacit-server \
    && install -D -m 0755 target/release/tacit-server /out/tacit-server \
    && install -d -m 0700 -o 65532 -g 65532 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/tacit-server /usr/local/bin/tacit-server
# An empty data directory owned by the runtime user: a named volume mounted here starts
# with this owner and mode, so the server (not root) can write to it.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/tacit
USER 65532:65532
ENV TACIT_DATA_DIR=/var/lib/tacit \
    TACIT_LISTEN=0.0.0.0:8443
VOLUME /var/lib/tacit
# 8443: the API (TLS). 9464: /metrics, only when TACIT_METRICS_LISTEN is set (for example
# to 0.0.0.0:9464); publish it only where the scraper alone can reach it.
EXPOSE 8443 9464
# `tacit-server healthcheck`: GET /readyz on the configured listen address over loopback;
# exit 0 when ready, 1 when not.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/tacit-server", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tacit-server"]
CMD ["serve"]
