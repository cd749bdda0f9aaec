import GRDB
import GatehouseCore

/// An `events` row. Reads go through Codable; the hot insert path binds the same columns by hand
/// (see `EventLog`), because a cached statement is several times faster than a record insert.
struct EventRow: Codable, FetchableRecord, TableRecord {
    static let databaseTableName = "events"
    var seq: Int64
    var id: String
    var type: String
    var pipeline: String
    var run: String?
    var step: String?
    var severity: String
    var summary: StoredText?
    var details: StoredText?
    var labels: String?
    var attributes: String?
    var url: String?
    var time: Int64
    var received_at: Int64

    var stored: StoredEvent {
        var labelPairs: [(key: String, value: String)] = []
        if let labels, let object = (try? JSONValue.parse(labels))?.objectValue {
            labelPairs = object.compactMap { key, value in value.stringValue.map { (key, $0) } }
        }
        let attributeObject = attributes.flatMap { (try? JSONValue.parse($0))?.objectValue }
        let event = Event(
            id: id, type: type, pipeline: pipeline, run: run, step: step,
            severity: Severity(rawValue: severity) ?? .info, summary: summary?.string, details: details?.string,
            labels: labelPairs, attributes: attributeObject, url: url, time: Timestamp(milliseconds: time))
        return StoredEvent(cursor: seq, event: event, receivedAt: Timestamp(milliseconds: received_at))
    }
}

struct RunRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "runs"
    var pipeline: String
    var run: String
    var status: String
    var failed_step: String?
    var started_at: Int64
    var ended_at: Int64?
    var last_event_at: Int64
    var lifecycle_at: Int64?
    var event_count: Int
    var counts: String

    init(_ s: RunSummary) {
        pipeline = s.pipeline
        run = s.run
        status = s.status.rawValue
        failed_step = s.failedStep
        started_at = s.startedAt.milliseconds
        ended_at = s.endedAt?.milliseconds
        last_event_at = s.lastEventAt.milliseconds
        lifecycle_at = s.lifecycleAt?.milliseconds
        event_count = s.eventCount
        var object = JSONObject()
        for (k, v) in s.counts.sorted(by: { $0.key < $1.key }) { object.append(k, .int(v)) }
        counts = JSONValue.object(object).serialized()
    }

    var summary: RunSummary {
        var s = RunSummary(pipeline: pipeline, run: run, first: Timestamp(milliseconds: started_at))
        s.status = RunSummary.Status(rawValue: status) ?? .running
        s.failedStep = failed_step
        s.endedAt = ended_at.map(Timestamp.init(milliseconds:))
        s.lastEventAt = Timestamp(milliseconds: last_event_at)
        s.lifecycleAt = lifecycle_at.map(Timestamp.init(milliseconds:))
        s.eventCount = event_count
        if let object = (try? JSONValue.parse(counts))?.objectValue {
            for (k, v) in object { s.counts[k] = v.doubleValue.map { Int($0) } ?? 0 }
        }
        return s
    }
}
