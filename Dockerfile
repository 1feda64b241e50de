# chargeflow's image: a static binary on an empty base (docs/deploy.md).
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t chargeflow .
# The build stage's `go build` line is the one cmd/chargeflow/deploy_test.go
# parses and builds with before it runs `serve --dev` and `healthcheck` in an
# empty root: keep it one line.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .git stays out of the build context (.dockerignore), so the revision that
# `chargeflow version` prints comes in as a build argument.
ARG REVISION=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w -X main.buildRevision=${REVISION}" -o /out/chargeflow ./cmd/chargeflow
# The embedded store's directory, owned by the image's user (a volume mounted
# there starts with this owner).
RUN mkdir -p /out/data

FROM scratch
# Huifu's API is HTTPS: the CA bundle. Nothing else from a distribution (no
# shell, no curl, no zoneinfo: Beijing time is a fixed zone in the binary).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/chargeflow /chargeflow
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
ENV CHARGEFLOW_DATA_DIR=/data
EXPOSE 8080 1883
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 CMD ["/chargeflow", "healthcheck"]
ENTRYPOINT ["/chargeflow"]
CMD ["serve"]
