import GatehouseCore

/// What a gate use case may read and write inside one transaction. The service decides; this
/// only persists.
public protocol GateTransaction {
    func gate(_ id: String) throws -> Gate?
    /// The newest gate opened with `key`.
    func latestGate(key: String) throws -> Gate?
    func gateExists(_ id: String) throws -> Bool
    func save(_ gate: Gate) throws
    /// Appends to the hash-chained audit ledger.
    func appendAudit(gateID: String?, action: String, actor: String?, detail: JSONObject, at: Timestamp) throws
    /// Pending gates whose next deadline (expiry, reminder, escalation) is at or before `now`.
    func dueGateIDs(at now: Timestamp, limit: Int) throws -> [String]
    /// The attributes of the latest event of a run that is not a gate's own (what
    /// `auto_approve` sees as `event.attributes`).
    func latestRunAttributes(pipeline: String, run: String) throws -> JSONObject?
}

/// Which gates to list, newest first.
public struct GateFilter: Sendable {
    public var state: GateState?
    public var pipeline: String?
    public var run: String?
    public var limit = 100
    public init(state: GateState? = nil, pipeline: String? = nil, run: String? = nil, limit: Int = 100) {
        self.state = state
        self.pipeline = pipeline
        self.run = run
        self.limit = limit
    }
}

/// Gates, their audit ledger and the callback nonces, persisted. A transaction commits with the
/// events it returns — and the deliveries they cause — or not at all.
public protocol GateRepository: Sendable {
    func transact<T: Sendable>(_ work: @escaping @Sendable (any GateTransaction) throws -> (T, [Event])) async throws -> T
    func get(_ id: String) async throws -> Gate?
    /// The newest gate opened with `key`.
    func latest(key: String) async throws -> Gate?
    func list(_ filter: GateFilter) async throws -> [Gate]
    func pendingCount() async throws -> Int
    /// The earliest moment any pending gate needs the scheduler.
    func nextDeadline() async throws -> Timestamp?
    func audit(_ id: String) async throws -> [AuditEntry]
    func verifyAudit() async throws -> AuditLedger.Verification
    /// Marks a signed callback as used; false when it was already (a replay). Nonces older
    /// than `keep` ms are forgotten.
    func claimNonce(_ nonce: String, now: Timestamp, keep: Int64) async throws -> Bool
}
