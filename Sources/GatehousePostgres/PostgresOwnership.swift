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
/// twice.) A process takes at most its share of the receivers (their count over the live
/// processes serving any of them, rounded up), so replicas started together split them; one
/// holding two or more than another that serves one of them (it started first) hands it one
/// a second; one that stops gracefully gives its leases up at once.
public final class PostgresOwnership: Ownership {
    private let store: PostgresStore
    private let receivers: [String]
    private let bus: Bus
    private let logger: Logger
    let me = "p-" + String(UInt64.random(in: 1...UInt64.max), radix: 36)
    /// What this process holds, and until when it may act (ContinuousClock keeps counting
    /// while the machine is suspended, so a resumed process sees its leases as run out).
    private let held = Mutex<(names: Set<String>, until: ContinuousClock.Instant)>(([], .now))
    /// Whether a receiver may be handed to another process now (the dispatcher's view: not
    /// backing off, paused or paced — a new holder starts with fresh pacing and health).
    /// (Boxed, as a closure in a `Mutex` must be: `Boxed`. Read every second, it grew a chain
    /// of thunks a day long.)
    private let steady = Mutex<Boxed<@Sendable (String) -> Bool>?>(nil)
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

    /// Hands receivers to other processes only when `isSteady` says so.
    public func handOver(when isSteady: @escaping @Sendable (String) -> Bool) {
        let box = Boxed(isSteady)
        steady.withLock { $0 = box }
    }

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
        // Given up as long idle, so that any process takes them at once, whatever its share.
        _ = try? await store.leases { db in
            try db.execute("UPDATE owners SET owner = '', until = \(databaseNowMilliseconds) - ? WHERE owner = ? AND name <> ?", [Self.lease, me, "process:" + me])
            try db.execute("DELETE FROM owners WHERE owner = ?", [me])
        }
    }

    private func tick() async throws {
        let me = me
        let receivers = receivers.map { "receiver:" + $0 }
        let lease = Self.lease
        let wasLeader = isLeader
        let wants = self.receivers.joined(separator: "\n")
        let given: (@Sendable (String) -> Bool)? = steady.withLock { $0 }?.value
        let isSteady: @Sendable (String) -> Bool = given ?? { _ in true }
        let (kept, gained, released, asked): ([String], [String], [String], ContinuousClock.Instant) = try await store.leases { db in
            let now = databaseNowMilliseconds
            // Taken just before the renewal reaches the database: the lease it renews runs 5 s
            // from a moment no earlier than this, so acting for 3 s from here is safe.
            let asked = ContinuousClock.now
            // Renewed — and with them any receiver another process handed to this one.
            let kept = try db.values(String.self, "UPDATE owners SET until = \(now) + ? WHERE owner = ? RETURNING name", [lease, me])
            var holding = Set(kept)
            var gained: [String] = []
            /// Takes `name` when nobody holds it; with `idleFor`, only when its last holder's
            /// lease ran out (or it was given up) at least that long ago. A process row carries
            /// the receivers the process serves (`wants`): others hand it only those.
            func take(_ name: String, idleFor: Int64 = 0, wants: String? = nil) throws {
                let won = try db.value(String.self, """
                    INSERT INTO owners (name, owner, until, wants) VALUES (?, ?, \(now) + ?, ?)
                    ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until, wants = excluded.wants
                    WHERE owners.until < \(now) - ?
                    RETURNING owner
                    """, [name, me, lease, wants, idleFor])
                if won == me {
                    holding.insert(name)
                    gained.append(name)
                }
            }
            if !holding.contains("process:" + me) { try take("process:" + me, wants: wants) }
            if !holding.contains(Self.leader) { try take(Self.leader) }
            // The live processes that serve any of this one's receivers (an API-only replica,
            // or one whose config differs, does not shrink this one's share of them), how many
            // receivers each holds, and whether it renewed in the last 1.5 s (a process that
            // died still counts until its lease runs out, and must not be given receivers).
            let others = try db.all("""
                SELECT p.owner, COALESCE(p.wants, ''), CASE WHEN p.until > \(now) + ? THEN 1 ELSE 0 END,
                       (SELECT COUNT(*) FROM owners r WHERE r.owner = p.owner AND r.name LIKE 'receiver:%' AND r.until > \(now))
                FROM owners p WHERE p.name LIKE 'process:%' AND p.owner <> ? AND p.until > \(now)
                """, [lease - 1500, me]) { row in
                (owner: row[0] as String, wants: Set((row[1] as String).split(separator: "\n").map { "receiver:" + $0 }),
                 fresh: row[2] as Bool, holds: row[3] as Int)
            }.filter { !$0.wants.isDisjoint(with: receivers) }
            let processes = others.count + 1
            let share = receivers.isEmpty ? 0 : (receivers.count + processes - 1) / processes
            // Start at a different receiver in each process, so they do not all race for the
            // same first one.
            let offset = receivers.isEmpty ? 0 : Int.random(in: 0..<receivers.count)
            for i in receivers.indices {
                let name = receivers[(i + offset) % receivers.count]
                if holding.contains(name) { continue }
                if holding.filter({ $0.hasPrefix("receiver:") }).count < share {
                    try take(name)
                } else {
                    // Past its share, a process still takes a receiver nobody has held for a
                    // whole lease (one never held is first marked free from now): no receiver
                    // goes without a sender because shares disagree.
                    try db.execute("INSERT INTO owners (name, owner, until) VALUES (?, '', \(now)) ON CONFLICT (name) DO NOTHING", [name])
                    try take(name, idleFor: lease)
                }
            }
            // A process holding at least two receivers more than another live process that
            // serves one of them hands it one per tick, straight (owner set to it: the receiver
            // is never without a holder, and nobody else can take it meanwhile). So a process
            // started later gets work, and the counts even out without going back and forth:
            // each hand-over narrows the gap. Only a steady receiver moves (its new holder
            // starts with fresh pacing and health); its rows in flight and queued stay claimed
            // by this process (DeliveryClaim) until their outcomes are in or they are given
            // back, so the new holder does not send them again.
            var released: [String] = []
            let mine = holding.filter { $0.hasPrefix("receiver:") && !gained.contains($0) }
            for taker in others.filter({ $0.fresh && $0.holds + 2 <= mine.count }).sorted(by: { $0.holds < $1.holds }) {
                guard let name = mine.filter({ taker.wants.contains($0) && isSteady(String($0.dropFirst("receiver:".count))) }).randomElement() else { continue }
                try db.execute("UPDATE owners SET owner = ?, until = \(now) + ? WHERE name = ? AND owner = ?", [taker.owner, lease, name, me])
                holding.remove(name)
                released.append(name)
                break
            }
            if wasLeader {
                // Leases of processes long gone (one per restart) need not be counted forever.
                try db.execute("DELETE FROM owners WHERE name LIKE 'process:%' AND until < \(now) - 60000")
            }
            return (Array(holding), gained, released, asked)
        }
        let (lost, arrived) = held.withLock { state -> (Set<String>, Set<String>) in
            let lost = state.until > asked ? state.names.subtracting(kept).subtracting(released) : []
            let arrived = Set(kept).subtracting(state.names)
            state = (Set(kept), asked + Self.actFor)
            return (lost, arrived)
        }
        for name in lost { logger.warning("ownership lease lost to another process", metadata: ["lease": .string(name)]) }
        for name in released { logger.info("handed a receiver to a process holding fewer", metadata: ["lease": .string(name)]) }
        for name in gained where !name.hasPrefix("process:") { logger.info("this process now holds a lease", metadata: ["lease": .string(name)]) }
        for name in arrived.subtracting(gained) { logger.info("this process was handed a lease", metadata: ["lease": .string(name)]) }
        if !arrived.isEmpty { bus.publish(.wake) }
        if !gained.isEmpty { bus.publish(.wake) }
    }
}
