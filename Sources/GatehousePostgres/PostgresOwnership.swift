import Foundation
import GatehouseCore
import GatehouseStore
import Logging
import Synchronization

/// Who does what among the processes sharing one PostgreSQL database: leases in the `owners`
/// table — one for the leader (the timers), one per receiver (its sending, so its pacing,
/// back-off and in-flight rows live in one process), one per live process (to count them) —
/// renewed every second by their holder.
///
/// A lease lasts 5 s in the database's clock. Its holder stops acting on it 3 s after it last
/// asked to renew it, by its own clock, whenever a renewal fails or is late — a process cut off
/// from the database, or paused, stops before another may start. A process that dies lets its
/// leases run out and another takes them within about 5 s, then sends what is still due under
/// the same webhook-ids. (Shorter leases were tried: on a loaded 2-core machine a late
/// renewal then handed a live holder's receivers over, and its sends in flight were sent
/// twice.) A process takes at most its share of the receivers (their count over
/// the live processes), so replicas started together split them; one that stops gracefully
/// gives its leases up at once.
public final class PostgresOwnership: Ownership {
    private let store: PostgresStore
    private let receivers: [String]
    private let bus: Bus
    private let logger: Logger
    let me = "p-" + String(UInt64.random(in: 1...UInt64.max), radix: 36)
    /// What this process holds, and until when it may act (ContinuousClock keeps counting
    /// while the machine is suspended, so a resumed process sees its leases as run out).
    private let held = Mutex<(names: Set<String>, until: ContinuousClock.Instant)>(([], .now))
    static let lease: Int64 = 5000
    static let actFor = Duration.seconds(3)
    static let leader = "leader"

    public init(store: PostgresStore, receivers: [String], bus: Bus, logger: Logger) {
        self.store = store
        self.receivers = receivers.sorted()
        self.bus = bus
        self.logger = logger
    }

    private func holds(_ name: String) -> Bool {
        held.withLock { $0.until > .now && $0.names.contains(name) }
    }

    public var isLeader: Bool { holds(Self.leader) }
    public func owns(receiver: String) -> Bool { holds("receiver:" + receiver) }
    public var claimant: String? { me }

    /// Renews and takes leases once a second until cancelled; gives them up on the way out.
    public func run() async {
        while !Task.isCancelled {
            let started = ContinuousClock.now
            do {
                try await tick()
            } catch {
                // Nothing renewed: what is held runs out on its own clock.
                logger.warning("could not renew ownership leases", metadata: ["error": .string("\(error)")])
            }
            // Once a second from the start of the last tick, not a second after its end.
            try? await Task.sleep(until: started + .seconds(1), clock: .continuous)
        }
        held.withLock { $0 = ([], .now) }
        let me = me
        _ = try? await store.leases { db in try db.execute("DELETE FROM owners WHERE owner = ?", [me]) }
    }

    private func tick() async throws {
        let me = me
        let receivers = receivers.map { "receiver:" + $0 }
        let lease = Self.lease
        let wasLeader = isLeader
        let (kept, gained, released, asked): ([String], [String], [String], ContinuousClock.Instant) = try await store.leases { db in
            let now = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            // Taken just before the renewal reaches the database: the lease it renews runs 5 s
            // from a moment no earlier than this, so acting for 3 s from here is safe.
            let asked = ContinuousClock.now
            let kept = try db.values(String.self, "UPDATE owners SET until = \(now) + ? WHERE owner = ? RETURNING name", [lease, me])
            var holding = Set(kept)
            var gained: [String] = []
            func take(_ name: String) throws {
                let won = try db.value(String.self, """
                    INSERT INTO owners (name, owner, until) VALUES (?, ?, \(now) + ?)
                    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until WHERE owners.until < \(now)
                    RETURNING owner
                    """, [name, me, lease])
                if won == me {
                    holding.insert(name)
                    gained.append(name)
                }
            }
            if !holding.contains("process:" + me) { try take("process:" + me) }
            if !holding.contains(Self.leader) { try take(Self.leader) }
            let processes = max(1, try db.value(Int.self, "SELECT COUNT(*) FROM owners WHERE name LIKE 'process:%' AND until > \(now)") ?? 1)
            let share = receivers.isEmpty ? 0 : (receivers.count + processes - 1) / processes
            // Start at a different receiver in each process, so they do not all race for the
            // same first one.
            let offset = receivers.isEmpty ? 0 : Int.random(in: 0..<receivers.count)
            for i in receivers.indices {
                let name = receivers[(i + offset) % receivers.count]
                if holding.contains(name) || holding.filter({ $0.hasPrefix("receiver:") }).count >= share { continue }
                try take(name)
            }
            // A process holding more than its share (it was alone when others started) gives
            // one receiver back per tick while another process holds less than its share. That
            // one must have renewed within the last 1.5 s: a process that died still counts
            // until its lease runs out, and must not draw receivers away from a live one.
            var released: [String] = []
            let mine = holding.filter { $0.hasPrefix("receiver:") }
            if mine.count > share {
                let starved = try db.exists("""
                    SELECT 1 FROM owners p WHERE p.name LIKE 'process:%' AND p.owner <> ? AND p.until > \(now) + ?
                      AND (SELECT COUNT(*) FROM owners r WHERE r.owner = p.owner AND r.name LIKE 'receiver:%' AND r.until > \(now)) < ?
                    """, [me, lease - 1500, share])
                if starved, let name = mine.randomElement() {
                    // Its rows in flight stay claimed by this process (DeliveryClaim) until
                    // their outcomes are in: the next holder does not send them again.
                    try db.execute("DELETE FROM owners WHERE name = ? AND owner = ?", [name, me])
                    holding.remove(name)
                    released.append(name)
                }
            }
            if wasLeader {
                // Leases of processes long gone (one per restart) need not be counted forever.
                try db.execute("DELETE FROM owners WHERE until < \(now) - 60000")
            }
            return (Array(holding), gained, released, asked)
        }
        let lost = held.withLock { state -> Set<String> in
            let lost = state.until > asked ? state.names.subtracting(kept).subtracting(released) : []
            state = (Set(kept), asked + Self.actFor)
            return lost
        }
        for name in lost { logger.warning("ownership lease lost to another process", metadata: ["lease": .string(name)]) }
        for name in released { logger.info("gave a lease to a process holding less than its share", metadata: ["lease": .string(name)]) }
        for name in gained where !name.hasPrefix("process:") { logger.info("this process now holds a lease", metadata: ["lease": .string(name)]) }
        if !gained.isEmpty { bus.publish(.wake) }
    }
}
