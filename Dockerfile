# tracecar: a small, non-root image that runs with a read-only root filesystem.
#   docker build -t tracecar .
#   docker run --read-only -v $PWD/config:/etc/tracecar:ro tracecar \
#     run --dataplane /etc/tracecar/dataplane.yaml --policy /etc/tracecar
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY config config
COPY benches benches
COPY scripts scripts
# The profile-guided release build: a training run on loopback (benches/train.rs), then the
# `dist` build with its profile; without rustup's llvm-tools it makes the plain `dist` build.
RUN scripts/dist && cp target/dist/tracecar /tracecar

# distroless/cc: glibc and CA certificates, no shell, uid 65532.
# The init container of transparent proxying (deploy/kubernetes/web-transparent.yaml): tracecar
# with the nft tool. Build it with `docker build --target redirect`.
FROM debian:bookworm-slim AS redirect
RUN apt-get update && apt-get install -y --no-install-recommends nftables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /tracecar /usr/local/bin/tracecar
ENTRYPOINT ["/usr/local/bin/tracecar"]
CMD ["redirect", "install", "--dry-run", "--uid", "65532"]

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /tracecar /usr/local/bin/tracecar
COPY --from=build /src/config /etc/tracecar/examples
USER nonroot:nonroot
# Inbound and outbound ports come from the Dataplane; 9901 is the admin server, which listens
# on loopback unless TRACECAR_ADMIN says otherwise (e.g. 0.0.0.0:9901 for kubelet probes).
EXPOSE 9901
ENTRYPOINT ["/usr/local/bin/tracecar"]
CMD ["run"]
