# Build: docker compose build   (or: docker build -t gatehouse .)
FROM swift:6.3-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4-openssl-dev libsqlite3-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
# Compiled into the binary by the EmbedFilesPlugin build-tool plugin.
COPY Plugins ./Plugins
COPY templates ./templates
COPY docs ./docs
RUN swift build -c release --static-swift-stdlib --product gatehouse \
    && cp "$(swift build -c release --show-bin-path)/gatehouse" /gatehouse && strip /gatehouse

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libcurl4 libsqlite3-0 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /data gatehouse && mkdir -p /data && chown gatehouse /data
COPY --from=build /gatehouse /usr/local/bin/gatehouse
USER gatehouse
WORKDIR /data
ENV GATEHOUSE_DB=/data/gatehouse.db
EXPOSE 8080
ENTRYPOINT ["gatehouse"]
CMD ["serve", "--address", "0.0.0.0:8080"]
