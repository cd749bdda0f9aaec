import GatehouseCore
import GatehouseStore
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// Who does what among the processes sharing one PostgreSQL database, through session
/// advisory locks held on one connection of each process: the leader's lock runs the timers,
/// a receiver's lock sends its deliveries. A process that dies loses its connection and so its
/// locks; another takes them within a second and sends what is still due, under the same
/// webhook-ids. A process takes at most its share of the receivers (their count over the
/// processes connected), so replicas started together split them.
public final class PostgresOwnership: Ownership {
    private let store: PostgresStore
    private let receivers: [String]
    private let bus: Bus
    private let logger: Logger
    private let held = Mutex<(leader: Bool, receivers: Set<String>)>((false, []))
    static let application = "gatehouse-ownership"

    public init(store: PostgresStore, receivers: [String], bus: Bus, logger: Logger) {
        self.store = store
        self.receivers = receivers.sorted()
        self.bus = bus
        self.logger = logger
    }

    public var isLeader: Bool { held.withLock { $0.leader } }
    public func owns(receiver: String) -> Bool { held.withLock { $0.receivers.contains(receiver) } }

    /// Takes what is free once a second until cancelled; reconnects after a lost connection
    /// (having let go of everything, since the server let go of the locks).
    public func run() async {
        while !Task.isCancelled {
            do {
                try await hold()
            } catch {
                if Task.isCancelled { break }
                logger.warning("ownership connection lost; reconnecting", metadata: ["error": .string(String(reflecting: error))])
            }
            held.withLock { $0 = (false, []) }
            try? await Task.sleep(for: .seconds(1))
        }
        held.withLock { $0 = (false, []) }
    }

    private func hold() async throws {
        var configuration = store.pool.configuration
        configuration.options.additionalStartupParameters.append(("application_name", Self.application))
        let connection = try await PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.any(), configuration: configuration, id: 0, logger: logger)
        defer { Task { try? await connection.close() } }
        while !Task.isCancelled {
            var gained = false
            if !isLeader, try await tryLock(connection, PostgresStore.lockSpace, PostgresStore.Lock.scheduler.rawValue) {
                held.withLock { $0.leader = true }
                gained = true
                logger.info("this process now runs the timers")
            }
            let processes = try await count(connection)
            let share = receivers.isEmpty ? 0 : (receivers.count + max(processes, 1) - 1) / max(processes, 1)
            // Start at a different receiver in each process, so they do not all race for the
            // same first one.
            let offset = Int(UInt32.random(in: 0..<UInt32(max(receivers.count, 1))))
            for i in receivers.indices {
                let name = receivers[(i + offset) % receivers.count]
                if held.withLock({ $0.receivers.count >= share || $0.receivers.contains(name) }) { continue }
                if try await tryLock(connection, Self.receiverSpace, Self.key(name)) {
                    held.withLock { _ = $0.receivers.insert(name) }
                    gained = true
                    logger.info("this process now sends to a receiver", metadata: ["receiver": .string(name)])
                }
            }
            if gained { bus.publish(.wake) }
            try await Task.sleep(for: .seconds(1))
        }
    }

    private func tryLock(_ connection: PostgresConnection, _ space: Int32, _ key: Int32) async throws -> Bool {
        var binds = PostgresBindings()
        binds.append(space)
        binds.append(key)
        let rows = try await connection.query(PostgresQuery(unsafeSQL: "SELECT pg_try_advisory_lock($1, $2)", binds: binds), logger: logger)
        for try await (locked) in rows.decode(Bool.self) { return locked }
        return false
    }

    private func count(_ connection: PostgresConnection) async throws -> Int {
        var binds = PostgresBindings()
        binds.append(Self.application)
        let rows = try await connection.query(
            PostgresQuery(unsafeSQL: "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()", binds: binds),
            logger: logger)
        for try await (n) in rows.decode(Int64.self) { return Int(n) }
        return 1
    }

    static let receiverSpace: Int32 = 0x6769

    /// A receiver's lock key: FNV-1a of its name (a collision only makes two receivers share
    /// an owner).
    static func key(_ name: String) -> Int32 {
        var hash: UInt32 = 2_166_136_261
        for byte in name.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return Int32(bitPattern: hash)
    }
}
