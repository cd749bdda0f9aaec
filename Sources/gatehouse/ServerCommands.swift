import ArgumentParser
import Foundation
import GatehouseClient
import GatehouseCore
import GatehouseServer
import GatehouseStore
import Logging
import Metrics
import Prometheus

/// Where the config comes from: `--config`, else GATEHOUSE_CONFIG, else ./gatehouse.yml when it
/// exists, else the built-in defaults.
func loadConfig(path: String?) throws -> GatehouseConfig {
    let env = ProcessInfo.processInfo.environment
    let explicit = path ?? env["GATEHOUSE_CONFIG"]
    let file = explicit ?? (FileManager.default.fileExists(atPath: "gatehouse.yml") ? "gatehouse.yml" : nil)
    guard let file else { return GatehouseConfig() }
    let loaded = ConfigLoader().load(file: file)
    if !loaded.issues.isEmpty {
        for issue in loaded.issues { FileHandle.standardError.write(Data("gatehouse: \(file): \(issue)\n".utf8)) }
        throw ExitCode(ClientFailure.Code.config)
    }
    return loaded.config
}

/// `--db`, else GATEHOUSE_DB, else the config's storage (postgres, else sqlite).
func databasePath(_ flag: String?, config: GatehouseConfig) -> String {
    flag ?? ProcessInfo.processInfo.environment["GATEHOUSE_DB"] ?? config.storage.location
}

/// Opens the store for a command-line tool, or fails with the reason and exit code.
func openStore(_ location: String, migrate: Bool = true) throws -> any StoreDatabase {
    do {
        return try Storage.open(location, migrate: migrate)
    } catch {
        throw ClientFailure("cannot open the database \(Storage.redacted(location)): \(error)", exitCode: ClientFailure.Code.unavailable)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the Gatehouse server.")

    @Option(help: "Config file (env GATEHOUSE_CONFIG; default ./gatehouse.yml when present).") var config: String?
    @Option(help: "SQLite database file or postgres:// URL (env GATEHOUSE_DB; default ./gatehouse.db).") var db: String?
    @Flag(help: "Do not apply pending PostgreSQL migrations at start (run `gatehouse migrate` instead).") var noMigrate = false
    @Option(help: "HOST:PORT to listen on (env GATEHOUSE_ADDRESS; default 127.0.0.1:8080; port 0 picks a free one).") var address: String?
    @Option(help: "full (fsync every commit) or normal (env GATEHOUSE_DURABILITY).") var durability: String?
    @Option(help: "Log level (env GATEHOUSE_LOG_LEVEL).") var logLevel: String?

    func run() async throws {
        // A parent may start us with SIGTERM/SIGINT blocked (Foundation's Process does);
        // graceful shutdown depends on receiving them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        var config = try loadConfig(path: self.config)
        let env = ProcessInfo.processInfo.environment
        config.storage.sqlite = databasePath(db, config: config)
        config.storage.postgres = nil
        config.storage.migrate = !noMigrate
        if let address = address ?? env["GATEHOUSE_ADDRESS"] {
            guard ServerAddress(address) != nil else { throw ValidationError("--address \(address) is not HOST:PORT") }
            config.server.address = address
        }
        if let text = durability ?? env["GATEHOUSE_DURABILITY"] {
            guard let d = Durability(rawValue: text) else { throw ValidationError("--durability must be full or normal") }
            config.storage.durability = d
        }
        if let level = logLevel ?? env["GATEHOUSE_LOG_LEVEL"] { config.log.level = level }
        if let format = env["GATEHOUSE_LOG_FORMAT"] { config.log.format = format }
        if let text = env["GATEHOUSE_MAX_BODY"] {
            // As the config file's server.max_body: a byte count above 0 (a negative one crashed
            // the first chunked request).
            guard let maxBody = Int(text), maxBody > 0 else { throw ValidationError("GATEHOUSE_MAX_BODY must be a byte count above 0 (got \"\(text)\")") }
            config.server.maxBodyBytes = maxBody
        }

        let level = Logger.Level(rawValue: config.log.level) ?? .info
        let format = config.log.format
        LoggingSystem.bootstrap { label in
            format == "text" ? TextLogHandler(label: label, level: level) as any LogHandler : JSONLogHandler(label: label, level: level)
        }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        MetricsSystem.bootstrap(factory)
        let logger = Logger(label: "gatehouse")
        do {
            try await GatehouseServer.run(config: config, logger: logger, registry: registry)
        } catch let error as StartupError {
            FileHandle.standardError.write(Data("gatehouse: \(error.description)\n".utf8))
            throw ExitCode(ClientFailure.Code.config)
        }
    }
}

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Manage API tokens (works on the database file directly).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Location: ParsableArguments {
        @Option(help: "Config file, for its storage.") var config: String?
        @Option(help: "SQLite database file or postgres:// URL (env GATEHOUSE_DB; default ./gatehouse.db).") var db: String?

        func store() throws -> any TokenStore {
            SQLTokenStore(database: try openStore(databasePath(db, config: try loadConfig(path: config))))
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a token and print its secret (shown once).")
        @OptionGroup var location: Location
        @Option(help: "A name for the token (who or what uses it).") var name: String
        @Option(help: "Comma-separated scopes: \(Scope.allCases.map(\.rawValue).joined(separator: " ")).") var scopes: String

        func run() throws {
            try runClient {
                let parsed: [Scope]
                switch Scope.parseList(scopes) {
                case .success(let s): parsed = s
                case .failure(let problem): throw ClientFailure(problem.detail, exitCode: ClientFailure.Code.usage)
                }
                guard !name.trimmingCharacters(in: .whitespaces).isEmpty else { throw ClientFailure("--name must not be empty", exitCode: ClientFailure.Code.usage) }
                // The name becomes who did things (a silence's creator, a decision's actor), which
                // the API itself checks for control characters.
                guard ControlCharacters.newIdentifierError("name", name) == nil, name.unicodeScalars.count <= 128 else {
                    throw ClientFailure("--name must be at most 128 characters, without \(ControlCharacters.Deceptive.described)", exitCode: ClientFailure.Code.usage)
                }
                // What the token does is done as web:<name> (a decision, a label, a sign-in), so
                // the name must be one: refused here, not as a 422 on a field its user never sent.
                guard Identity.web(name) != nil, !name.hasPrefix("web:") else {
                    throw ClientFailure(
                        "--name \"\(name)\" cannot be a name: what the token does is done as web:<name>, so no spaces, colons, quotes, < or > (e.g. ci, ci-bot, alice)",
                        exitCode: ClientFailure.Code.usage)
                }
                let store = try location.store()
                let (token, secret): (AccessToken, String)
                do {
                    (token, secret) = try store.create(name: name, scopes: parsed)
                } catch let taken as TokenNameTaken {
                    throw ClientFailure(
                        "a live token is already named \(name) (\(taken.existing.id)); choose another name, or revoke it first (gatehouse token revoke \(taken.existing.id))",
                        exitCode: ClientFailure.Code.rejected)
                }
                print(secret)
                FileHandle.standardError.write(Data("gatehouse: created token \(token.id) (\(token.name): \(parsed.map(\.rawValue).joined(separator: ","))); the secret above is not shown again\n".utf8))
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List tokens (never their secrets).")
        @OptionGroup var location: Location
        @Flag(help: "JSON output.") var json = false

        func run() throws {
            try runClient {
                let tokens = try location.store().list()
                if json { printJSON(.array(tokens.map(\.json))); return }
                print(["ID", "NAME", "SCOPES", "CREATED", "REVOKED"].joined(separator: "\t"))
                for t in tokens {
                    print([t.id, t.name, t.scopes.map(\.rawValue).joined(separator: ","), t.createdAt.rfc3339, t.revokedAt?.rfc3339 ?? "-"].joined(separator: "\t"))
                }
            }
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id or name.")
        @OptionGroup var location: Location
        @Argument(help: "Token id or name.") var token: String

        func run() throws {
            try runClient {
                let revoked = try location.store().revoke(token)
                guard !revoked.isEmpty else { throw ClientFailure("no active token with id or name \"\(token)\"", exitCode: ClientFailure.Code.notFound) }
                for t in revoked { print("revoked \(t.id) (\(t.name))") }
            }
        }
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Configuration tools.", subcommands: [Check.self])

    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate a config file (and its templates); prints every problem with its line.")
        @Argument(help: "Config file (default ./gatehouse.yml).") var file: String = "gatehouse.yml"

        func run() async throws {
            var loaded = ConfigLoader().load(file: file)
            if loaded.issues.isEmpty { loaded.issues += await GatehouseServer.checkTemplates(loaded.config) }
            if loaded.issues.isEmpty {
                print("\(file): OK (\(loaded.config.receivers.count) receiver(s))")
                return
            }
            for issue in loaded.issues { print("\(file):\(issue.line > 0 ? "\(issue.line):" : "") \(issue.message)") }
            FileHandle.standardError.write(Data("gatehouse: \(loaded.issues.count) problem(s) in \(file)\n".utf8))
            throw ExitCode(ClientFailure.Code.config)
        }
    }
}

/// `gatehouse migrate`: applies the schema migrations the database lacks and lists them all
/// (SQLite files migrate on open as well; PostgreSQL servers shared by replicas may prefer
/// this step before a rolling restart with `serve --no-migrate`).
struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Apply pending schema migrations and list what is applied.")
    @Option(help: "Config file, for its storage.") var config: String?
    @Option(help: "SQLite database file or postgres:// URL (env GATEHOUSE_DB; default ./gatehouse.db).") var db: String?

    func run() throws {
        try runClient {
            let location = databasePath(db, config: try loadConfig(path: config))
            let store = try openStore(location, migrate: true)
            let applied = try store.appliedMigrations()
            for name in applied { print(name) }
            FileHandle.standardError.write(Data("gatehouse: \(Storage.redacted(location)) is at \(applied.last ?? "no migration") (\(applied.count) applied)\n".utf8))
        }
    }
}
