/// What one process does alone when several share a database: the timers, and each
/// receiver's sending (so its pacing, back-off and in-flight rows live in one place).
public protocol Ownership: Sendable {
    /// Runs the timers: gate deadlines, `repeat_interval` reminders, the sweep of idle groups.
    var isLeader: Bool { get }
    /// Sends `receiver`'s deliveries.
    func owns(receiver: String) -> Bool
    /// The name this process claims the rows it sends under, where processes share the
    /// database (`DeliveryClaim`); nil for a process on its own.
    var claimant: String? { get }
}

/// One process on its own database (SQLite): it does everything.
public struct SoleProcess: Ownership {
    public init() {}
    public var isLeader: Bool { true }
    public func owns(receiver: String) -> Bool { true }
    public var claimant: String? { nil }
}

/// The database's clock in milliseconds (PostgreSQL), as SQL: leases in `owners` and row claims
/// are timed by it, so processes whose clocks disagree still agree on who holds what.
public let databaseNowMilliseconds = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
