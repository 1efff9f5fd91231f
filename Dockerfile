# syntax=docker/dockerfile:1
#
# Images of the production stack (docker-compose.yml builds each target):
#   bridge          the bridge server: dist/ and its runtime dependencies only (the default)
#   demo-bridge     the same server with the demo's spam tools (demo/server/serve.ts)
#                   and its 16 MiB request limit: docker-compose.yml's opt-in demo
#                   profile only, never the production replicas (the tools are CPU-heavy)
#   demo            the built demo page, served by nginx
#   python-worker   a Python snakepit worker (grpcio) with the generated stubs
#
# test/deploy/dockerfile.test.ts checks this file and runs the bridge
# target's recipe (npm ci --omit=dev, then the CLI) on the same files.

ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# Compiles the library (dist/) and the demo (demo/dist/) with every
# development dependency; nothing of this stage but its output ships.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run -s build

# Runtime dependencies only: no compiler, test tool or Node download.
FROM ${NODE_IMAGE} AS runtime-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM nginx:1.28.0-alpine AS demo
COPY --from=build /app/demo/dist /usr/share/nginx/html

FROM debian:bookworm-20250520-slim AS python-worker
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3-grpcio python3-protobuf python3-sklearn \
     protobuf-compiler protobuf-compiler-grpc libprotobuf-dev \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /worker
COPY proto/ proto/
COPY demo/python/ demo/python/
RUN mkdir gen && protoc -I proto --python_out=gen --grpc_python_out=gen \
  --plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin proto/snakepit/bridge/bridge.proto
ENV PYTHONPATH=/worker/gen
USER nobody
ENTRYPOINT ["python3", "demo/python/spam_worker.py"]

# The demo's bridge: `serve` with the same options and HEALTHCHECK, plus the
# spam tools the demo page calls. It runs demo/server/serve.ts from source
# (Node 24 strips the types) with the build stage's full node_modules: the
# tools read the SpamAssassin corpus from a development dependency.
FROM ${NODE_IMAGE} AS demo-bridge
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/package.json ./
COPY --from=build /app/scripts/ts-source-hooks.mjs ./scripts/
COPY --from=build /app/src ./src
COPY --from=build /app/demo/server ./demo/server
COPY --from=build /app/demo/shared ./demo/shared
USER node
EXPOSE 50051 50052 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.UB_ADMIN_PORT || 9464}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--disable-warning=ExperimentalWarning", "--experimental-transform-types", "--import", "./scripts/ts-source-hooks.mjs", "demo/server/serve.ts"]
CMD ["serve", "--host", "0.0.0.0", "--worker-host", "0.0.0.0", "--admin-host", "0.0.0.0"]

# The bridge. Node is PID 1 and handles SIGTERM itself (the CLI drains:
# /healthz 503, watch streams ended with UNAVAILABLE, in-flight calls
# finished, exit 0); compose adds an init (init: true) to reap zombies.
FROM ${NODE_IMAGE} AS bridge
ENV NODE_ENV=production
WORKDIR /app
COPY --from=runtime-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
USER node
EXPOSE 50051 50052 9464
# The slim image has no curl: Node's fetch asks the admin listener.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.UB_ADMIN_PORT || 9464}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/server/cli.js"]
CMD ["serve", "--host", "0.0.0.0", "--worker-host", "0.0.0.0", "--admin-host", "0.0.0.0"]
