# syntax=docker/dockerfile:1
# One image per app, from one Dockerfile:
#   docker build --build-arg APP=gateway         -t daca/gateway .
#   docker build --build-arg APP=services/chat   -t daca/chat-service .
#   docker build --build-arg APP=services/memory -t daca/agent-memory-service .
# (docker-compose.yml builds all three.) Static binary, distroless base,
# non-root user. No secret is ever copied into an image: secrets.json is
# mounted at run time (see .dockerignore).
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG APP=gateway
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/app ./${APP}

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/app /app
USER nonroot:nonroot
ENV LOG_FORMAT=json
ENTRYPOINT ["/app"]
