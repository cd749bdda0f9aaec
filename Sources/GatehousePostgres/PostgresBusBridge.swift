import Dispatch
import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// The bus across processes: what one process publishes on its bus, the others publish on
/// theirs, through PostgreSQL's LISTEN/NOTIFY. A notification carries the message — a cursor,
/// a gate id or key, a dataset name — never data: each process reads what changed from the
/// database, as its own subscribers always do. So SSE streams, gate and dataset waits and the
/// console on one replica wake when another commits.
///
/// Notifications are best effort (one sent just before its sender dies is lost), so the
/// bridge also looks at the newest event cursor once a second and announces any it was not
/// told of, and after reconnecting its listener it wakes every subscriber to re-read.
public final class PostgresBusBridge: Sendable {
    static let channel = "gatehouse_bus"
    private let store: PostgresStore
    private let bus: Bus
    private let origin = String(UInt64.random(in: 1...UInt64.max), radix: 36)
    /// Messages to send, and whether the sender is at work on them.
    private let outbound = Mutex<(queue: [BusMessage], busy: Bool)>(([], false))
    private let sender = DispatchQueue(label: "gatehouse.bus.notify")
    /// Messages from other processes are published on this queue: the observer sees the key
    /// and does not send them back out.
    private let inbound = DispatchQueue(label: "gatehouse.bus.listen")
    private static let inboundKey = DispatchSpecificKey<Bool>()
    private let newestCursor = Atomic<Int64>(0)
    private let logger: Logger

    public init(store: PostgresStore, bus: Bus, logger: Logger) {
        self.store = store
        self.bus = bus
        self.logger = logger
        inbound.setSpecific(key: Self.inboundKey, value: true)
        bus.observe { [weak self] message in self?.local(message) }
    }

    /// Listens until the task is cancelled, reconnecting after a lost connection.
    public func run() async {
        while !Task.isCancelled {
            do {
                try await listen()
            } catch {
                if Task.isCancelled { return }
                logger.warning("bus listener lost its connection; reconnecting", metadata: ["error": .string(String(reflecting: error))])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }

    private func listen() async throws {
        let connection = try await PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.any(), configuration: store.pool.configuration, id: 0, logger: logger)
        defer { Task { try? await connection.close() } }
        let notifications = try await connection.listen(Self.channel)
        // Whatever was announced while nobody listened: subscribers re-read.
        inbound.async { self.bus.publish(.resync) }
        // The safety net for lost notifications, on its own task beside the listener.
        let poller = Task { await self.pollCursor() }
        defer { poller.cancel() }
        for try await notification in notifications {
            received(notification.payload)
        }
    }

    private func pollCursor() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            guard let newest = try? await store.read({ db in try db.value(Int64.self, "SELECT MAX(seq) FROM events") ?? 0 }) else { continue }
            if newest > newestCursor.load(ordering: .relaxed) {
                newestCursor.store(newest, ordering: .relaxed)
                inbound.async { self.bus.publish(.eventsCommitted(lastCursor: newest)) }
            }
        }
    }

    // MARK: Out

    private func local(_ message: BusMessage) {
        if case .eventsCommitted(let cursor) = message { raiseNewest(cursor) }
        if DispatchQueue.getSpecific(key: Self.inboundKey) == true { return }
        let start = outbound.withLock { state -> Bool in
            state.queue.append(message)
            if state.busy { return false }
            state.busy = true
            return true
        }
        if start { sender.async { self.flush() } }
    }

    /// Sends what queued up, coalesced: one notification carries many messages (one per
    /// line), and of event commits only the newest cursor.
    private func flush() {
        while true {
            let batch = outbound.withLock { state -> [BusMessage] in
                let taken = state.queue
                state.queue = []
                if taken.isEmpty { state.busy = false }
                return taken
            }
            if batch.isEmpty { return }
            var lines: [String] = []
            var newest: Int64?
            var seen = Set<String>()
            for message in batch {
                if case .eventsCommitted(let cursor) = message { newest = max(newest ?? cursor, cursor); continue }
                if let line = Self.encode(message), seen.insert(line).inserted { lines.append(line) }
            }
            if let newest { lines.append("e|\(newest)") }
            for payload in Self.payloads(origin: origin, lines: lines) {
                do {
                    try store.readNow { db in try db.execute("SELECT pg_notify(?, ?)", [Self.channel, payload]) }
                } catch {
                    logger.warning("could not notify other processes", metadata: ["error": .string(String(reflecting: error))])
                }
            }
        }
    }

    /// Lines joined into payloads under PostgreSQL's 8,000-byte limit.
    static func payloads(origin: String, lines: [String]) -> [String] {
        var out: [String] = []
        var current = origin
        for line in lines where line.utf8.count < 7000 {
            if current.utf8.count + line.utf8.count + 1 > 7900 {
                out.append(current)
                current = origin
            }
            current += "\n" + line
        }
        if current != origin { out.append(current) }
        return out
    }

    static func encode(_ message: BusMessage) -> String? {
        switch message {
        case .eventsCommitted(let cursor): return "e|\(cursor)"
        case .wake: return "w|"
        case .resync: return nil
        case .silencesChanged: return "s|"
        case .gateChanged(let id): return "g|\(id)"
        case .gateKeyChanged(let key): return key.contains("\n") ? nil : "k|\(key)"
        case .datasetChanged(let name): return "d|\(name)"
        }
    }

    static func decode(_ line: Substring) -> BusMessage? {
        guard let bar = line.firstIndex(of: "|") else { return nil }
        let value = String(line[line.index(after: bar)...])
        switch line[..<bar] {
        case "e": return Int64(value).map { .eventsCommitted(lastCursor: $0) }
        case "w": return .wake
        case "s": return .silencesChanged
        case "g": return .gateChanged(id: value)
        case "k": return .gateKeyChanged(key: value)
        case "d": return .datasetChanged(name: value)
        default: return nil
        }
    }

    // MARK: In

    private func received(_ payload: String) {
        let lines = payload.split(separator: "\n", omittingEmptySubsequences: false)
        guard let first = lines.first, first != origin else { return }
        let messages = lines.dropFirst().compactMap(Self.decode)
        for case .eventsCommitted(let cursor) in messages { raiseNewest(cursor) }
        inbound.async { for message in messages { self.bus.publish(message) } }
    }

    private func raiseNewest(_ cursor: Int64) {
        var current = newestCursor.load(ordering: .relaxed)
        while cursor > current {
            let (exchanged, original) = newestCursor.compareExchange(expected: current, desired: cursor, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}
