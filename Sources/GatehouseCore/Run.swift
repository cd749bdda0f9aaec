/// A run's status and timeline, derived from its events. Derivation is a fold, so the store can
/// keep a summary up to date one batch at a time and `GET /v1/runs/{run}` can rebuild it from
/// the events; both use `applying`.
public struct RunSummary: Sendable, Equatable {
    public enum Status: String, Sendable, Codable { case running, succeeded, failed }

    public var pipeline: String
    public var run: String
    public var status: Status
    /// The step of the latest `step.failed` (or of `run.failed` when it names one).
    public var failedStep: String?
    public var startedAt: Timestamp
    public var endedAt: Timestamp?
    public var lastEventAt: Timestamp
    public var eventCount: Int
    /// Events per type, sorted by type.
    public var counts: [String: Int]
    /// Time of the status-deciding lifecycle event (`run.started|succeeded|failed`): a later one
    /// wins, so a re-run after a failure reads as running again. Events arrive out of order;
    /// time, not arrival, decides.
    public var lifecycleAt: Timestamp?

    public init(pipeline: String, run: String, first: Timestamp) {
        self.pipeline = pipeline
        self.run = run
        self.status = .running
        self.startedAt = first
        self.lastEventAt = first
        self.eventCount = 0
        self.counts = [:]
    }

    public var durationMilliseconds: Int64? { endedAt.map { $0.milliseconds - startedAt.milliseconds } }

    public func applying(_ event: Event) -> RunSummary {
        var s = self
        s.eventCount += 1
        s.counts[event.type, default: 0] += 1
        if event.time > s.lastEventAt { s.lastEventAt = event.time }
        // A run starts at its run.started, or at its earliest event when that is missing.
        if event.type == "run.started" {
            if s.counts["run.started"] == 1 || event.time < s.startedAt { s.startedAt = event.time }
        } else if s.counts["run.started", default: 0] == 0, event.time < s.startedAt {
            s.startedAt = event.time
        }
        if event.type == "step.failed", let step = event.step { s.failedStep = step }
        if event.type == "run.failed", let step = event.step { s.failedStep = step }
        let lifecycle: Status? = switch event.type {
        case "run.started": .running
        case "run.succeeded": .succeeded
        case "run.failed": .failed
        default: nil
        }
        if let lifecycle, s.lifecycleAt.map({ event.time >= $0 }) ?? true {
            s.lifecycleAt = event.time
            s.status = lifecycle
            s.endedAt = lifecycle == .running ? nil : event.time
            if lifecycle == .succeeded { s.failedStep = nil }
        }
        return s
    }

    /// Derives a run from its events (any order).
    public static func derive(_ events: [Event]) -> RunSummary? {
        guard let first = events.first, let run = first.run else { return nil }
        return events.reduce(RunSummary(pipeline: first.pipeline, run: run, first: first.time)) { $0.applying($1) }
    }

    /// A run as `GET /v1/runs` shows it; `counts` by event type, sorted.
    public struct Resource: Encodable {
        var run: String
        var pipeline: String
        var status: String
        var failed_step: String?
        var started_at: Timestamp
        var ended_at: Timestamp?
        var duration_seconds: Double?
        var last_event_at: Timestamp
        var events: Int
        var counts: JSONObject
    }

    public var resource: Resource {
        Resource(
            run: run, pipeline: pipeline, status: status.rawValue, failed_step: failedStep, started_at: startedAt, ended_at: endedAt,
            duration_seconds: durationMilliseconds.map { Double($0) / 1000 }, last_event_at: lastEventAt, events: eventCount,
            counts: JSONObject(counts.sorted { $0.key < $1.key }.map { ($0.key, .int($0.value)) }))
    }

    public var json: JSONValue { JSONValueEncoder.value(resource) }
}
