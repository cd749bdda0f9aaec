/// A secret from the config (webhook URL, signing secret): printing it never shows it.
public struct Secret: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
}

public enum Durability: String, Sendable {
    /// fsync on every commit: an acknowledged event survives power loss.
    case full
    /// fsync at WAL checkpoints: an acknowledged event survives a process crash, not power loss.
    case normal
}

/// The whole configuration of a Gatehouse server (`gatehouse.yml`), with defaults.
public struct GatehouseConfig: Sendable {
    public struct Server: Sendable {
        public var address = "127.0.0.1:8080"
        public var publicURL: String?
        public var maxBodyBytes = 1 << 20
        /// Item imports (`POST /v1/datasets/{name}/items`) stream; this bounds one request.
        public var maxImportBytes = 256 << 20
        public var maxBatchItems = 1000
        public var sseHeartbeat = GatehouseDuration.seconds(15)
        public var shutdownTimeout = GatehouseDuration.seconds(10)
        /// How long a connection may stay silent while its request head or body is being read,
        /// and between requests on a kept-alive connection, before it is closed (a slow or
        /// stalled client must not hold a connection). Answers being written are not cut:
        /// gate waits and event streams run as long as they need.
        public var idleTimeout = GatehouseDuration.seconds(10)
        /// Open connections at most; beyond it new ones wait in the listen backlog.
        public var maxConnections = 1024
        public init() {}
    }
    public struct Storage: Sendable {
        /// A SQLite file, or a `postgres://` URL (`--db` and GATEHOUSE_DB take either).
        public var sqlite = "./gatehouse.db"
        /// `storage: { postgres: URL }`: wins over `sqlite` when set.
        public var postgres: String?
        public var durability = Durability.full
        /// Whether `serve` applies pending PostgreSQL migrations (`--no-migrate` turns it off).
        public var migrate = true
        /// Where the store is: the PostgreSQL URL when one is set, else `sqlite`.
        public var location: String { postgres ?? sqlite }
        public init() {}
    }
    public struct Log: Sendable {
        public var level = "info"
        public var format = "json"
        public init() {}
    }
    public enum ReceiverKind: String, Sendable, CaseIterable { case slack, discord, mattermost, webhook }
    public struct Receiver: Sendable {
        public var name: String
        public var kind: ReceiverKind
        /// Settings as given (secrets expanded); the delivery issue gives them types.
        public var settings: [String: Secret]
        /// How long a failing delivery keeps being retried (default 24 h).
        public var maxAge: GatehouseDuration?
        /// After this receiver was told of a failure in a pipeline, tell it when the pipeline's
        /// next run succeeds.
        public var sendResolved = false
        /// Longest wait for one answer (default 15 s); a timeout is retried.
        public var timeout: GatehouseDuration?
        public var line: Int
        public init(name: String, kind: ReceiverKind, settings: [String: Secret], maxAge: GatehouseDuration? = nil, line: Int) {
            self.name = name
            self.kind = kind
            self.settings = settings
            self.maxAge = maxAge
            self.line = line
        }
    }
    public struct Route: Sendable {
        public var receiver: String?
        public var matchers: [Matcher] = []
        public var groupBy: [String]?
        public var groupWait: GatehouseDuration?
        public var groupInterval: GatehouseDuration?
        public var repeatInterval: GatehouseDuration?
        public var continueMatching = false
        public var fallback: String?
        public var routes: [Route] = []
        public var line = 0
        public init() {}
    }
    public struct InhibitRule: Sendable {
        public var sourceMatchers: [Matcher] = []
        public var targetMatchers: [Matcher] = []
        public var equal: [String] = []
        public init() {}
    }

    public var server = Server()
    public var storage = Storage()
    public var log = Log()
    public var receivers: [Receiver] = []
    public var route: Route?
    public var inhibitRules: [InhibitRule] = []
    /// `gates:` — events that open gates (GateRule).
    public var gateRules: [GateRule] = []
    /// `labelling:` — events that create datasets and add items (LabellingRule).
    public var labellingRules: [LabellingRule] = []
    public var templatesDirectory: String?

    public init() {}
}

/// A problem in a config file, with its line (1-based; 0 when not tied to a line).
public struct ConfigIssue: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public init(line: Int, message: String) {
        self.line = line
        self.message = message
    }
    public var description: String { line > 0 ? "line \(line): \(message)" : message }
}
