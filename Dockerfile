# strand in a container: `docker build -t strand .` then
# `docker run -p 4317:4317 -p 4318:4318 -p 16686:16686 -v strand-data:/data strand`.
#
# Build stage: the same release build as `cargo install --path crates/strand-server`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p strand-server \
 && install -D target/release/strand /out/strand

# Run stage: Debian's slim image (the binary links glibc only), an unprivileged user, the
# data directory a volume.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin strand \
 && mkdir -p /data && chown strand /data
COPY --from=build /out/strand /usr/local/bin/strand
USER strand
WORKDIR /data
VOLUME ["/data"]
# OTLP gRPC and HTTP, Jaeger thrift HTTP and agent UDP, Zipkin, remote sampling, query API and UI.
EXPOSE 4317 4318 14268 6831/udp 6832/udp 9411 5778 16686
# The data directory by environment, so `docker run … strand serve --demo` keeps it.
ENV STRAND_DATA_DIR=/data
ENTRYPOINT ["/usr/local/bin/strand"]
# A container's loopback is its own: listen on all its interfaces (by environment, so a
# command given to `docker run` keeps it). The server then refuses to start until tokens
# are configured or `auth: none` is chosen (STRAND_AUTH_MODE=none).
ENV STRAND_LISTEN_ALL=true
CMD ["serve"]
