// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "gatehouse",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "gatehouse", targets: ["gatehouse"]),
        .executable(name: "gatehouse-bench", targets: ["GatehouseBench"]),
        // For the libFuzzer targets in Fuzz/ (a package of its own that depends on this one).
        .library(name: "GatehouseCore", targets: ["GatehouseCore"]),
        .library(name: "GatehouseSignatures", targets: ["GatehouseSignatures"]),
        .library(name: "GatehouseConfigFile", targets: ["GatehouseConfigFile"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        // Value types and pure logic: events, validation, JSON, time, runs, matchers, config model.
        .target(name: "GatehouseCore"),
        // The files the server reads at run time (templates/, docs/openapi.yaml), compiled in by
        // the EmbedFilesPlugin build-tool plugin so the binary runs from any directory.
        .target(name: "GatehouseResources", plugins: ["EmbedFilesPlugin"]),
        .executableTarget(name: "EmbedFiles"),
        .plugin(name: "EmbedFilesPlugin", capability: .buildTool(), dependencies: ["EmbedFiles"]),
        // sqlite3_config, which is variadic and so out of Swift's reach.
        .target(name: "SQLiteShim", linkerSettings: [.linkedLibrary("sqlite3")]),
        // glibc's malloc.h (mallinfo2, malloc_trim), which Swift's Glibc module does not export.
        .target(name: "HeapShim"),
        // Write errors through the WAL-write coalescing VFS end as in plain SQLite (RLIMIT_FSIZE
        // makes the writes fail); run by the store's tests.
        .executableTarget(name: "VFSErrorCheck", dependencies: ["SQLiteShim"]),
        // SQLite schema, migrations, the group-committing event log, tokens.
        .target(
            name: "GatehouseStore",
            dependencies: [
                "GatehouseCore",
                "SQLiteShim",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The same store on PostgreSQL: a blocking SQL session over postgres-nio for the commit
        // queue, LISTEN/NOTIFY for the bus across processes, advisory locks for the scheduler.
        .target(
            name: "GatehousePostgres",
            dependencies: [
                "GatehouseCore",
                "GatehouseStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The use cases (open/decide/cancel gates…) with their rules, audit, events, bus and
        // metrics, over the storage protocols of GatehouseStore.
        .target(
            name: "GatehouseServices",
            dependencies: ["GatehouseCore", "GatehouseStore", .product(name: "Metrics", package: "swift-metrics")]
        ),
        // libcurl, reached through a typed C shim because curl_easy_setopt is variadic.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .target(name: "CurlShim", dependencies: ["CCurl"]),
        // Blocking HTTP client over libcurl for the CLI and the tests (plus SSE streaming).
        .target(name: "GatehouseClient", dependencies: ["GatehouseHTTP", "CurlShim", "GatehouseCore"]),
        // The one libcurl layer under both clients: request setup and response collection.
        .target(name: "GatehouseHTTP", dependencies: ["CurlShim", "GatehouseCore"]),
        // Receivers (one folder per platform), the libcurl multi client, the dispatcher.
        .target(
            name: "GatehouseDelivery",
            dependencies: [
                "GatehouseCore",
                "GatehouseResources",
                "GatehouseStore",
                "GatehouseHTTP",
                "CurlShim",
                .product(name: "Mustache", package: "swift-mustache"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // Callback signatures (Slack, Discord), signed links and Mattermost context tokens: small
        // enough to fuzz (Fuzz/fuzz-callbacks).
        .target(
            name: "GatehouseSignatures",
            dependencies: ["GatehouseCore", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // gatehouse.yml → GatehouseConfig, every problem with its line (Fuzz/fuzz-config).
        .target(
            name: "GatehouseConfigFile",
            dependencies: ["GatehouseCore", "GatehouseDelivery", "GatehouseSignatures", .product(name: "Yams", package: "Yams")]
        ),
        .target(
            name: "GatehouseServer",
            dependencies: [
                "GatehouseCore",
                "GatehouseSignatures",
                "GatehouseConfigFile",
                "GatehouseResources",
                "GatehouseStore",
                "GatehouseServices",
                "GatehouseDelivery",
                "GatehousePostgres",
                "HeapShim",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
            ]
        ),
        .executableTarget(
            name: "gatehouse",
            dependencies: [
                "GatehouseCore",
                "GatehouseStore",
                "GatehouseServices",
                "GatehouseServer",
                "GatehouseClient",
                "GatehousePostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The alerts benchmark's load generator and sink, in C on epoll (as the were).
        .target(name: "BenchNet"),
        .executableTarget(
            name: "GatehouseBench",
            dependencies: [
                "BenchNet",
                "CurlShim",
                "GatehouseCore",
                "GatehouseClient",
                "GatehouseDelivery",
                "GatehousePostgres",
                "GatehouseStore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "GatehouseCoreTests", dependencies: ["GatehouseCore"]),
        .testTarget(name: "GatehouseStoreTests", dependencies: ["GatehouseStore", "GatehouseServices", "GatehouseCore", "GatehousePostgres"]),
        .testTarget(name: "GatehouseDeliveryTests", dependencies: ["GatehouseDelivery", "GatehouseCore", "GatehouseStore", "GatehouseResources"]),
        .testTarget(
            name: "GatehouseServerTests",
            dependencies: [
                "GatehouseServer", "GatehouseCore", "GatehouseClient", "GatehouseStore", "GatehouseDelivery", "GatehousePostgres",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
