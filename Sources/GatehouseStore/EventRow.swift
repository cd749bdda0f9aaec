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
    var time_given: Bool

    /// The columns `storedEvent(_:at:)` reads, in its order, for a table aliased `alias`.
    static func columns(_ alias: String) -> String {
        ["seq", "id", "type", "pipeline", "run", "step", "severity", "summary", "details", "labels", "attributes", "url", "time", "received_at", "time_given"]
            .map { "\(alias).\($0)" }.joined(separator: ", ")
    }

    /// An event read by column index from `row[offset...]` (see `columns`): the hot read paths
    /// skip Codable, which looks every column up by name.
    static func storedEvent(_ row: Row, at offset: Int) -> StoredEvent {
        var labelPairs: [(key: String, value: String)] = []
        if let labels = row[offset + 9] as String?, let object = (try? JSONValue.parse(labels))?.objectValue {
            labelPairs = object.compactMap { key, value in value.stringValue.map { (key, $0) } }
        }
        let attributeObject = (row[offset + 10] as String?).flatMap { (try? JSONValue.parse($0))?.objectValue }
        var event = Event(
            id: row[offset + 1], type: row[offset + 2], pipeline: row[offset + 3], run: row[offset + 4], step: row[offset + 5],
            severity: Severity(rawValue: row[offset + 6]) ?? .info,
            summary: (row[offset + 7] as StoredText?)?.string, details: (row[offset + 8] as StoredText?)?.string,
            labels: labelPairs, attributes: attributeObject, url: row[offset + 11], time: Timestamp(milliseconds: row[offset + 12]))
        event.timeGiven = row[offset + 14]
        return StoredEvent(cursor: row[offset], event: event, receivedAt: Timestamp(milliseconds: row[offset + 13]))
    }

    var stored: StoredEvent {
        var labelPairs: [(key: String, value: String)] = []
        if let labels, let object = (try? JSONValue.parse(labels))?.objectValue {
            labelPairs = object.compactMap { key, value in value.stringValue.map { (key, $0) } }
        }
        let attributeObject = attributes.flatMap { (try? JSONValue.parse($0))?.objectValue }
        var event = Event(
            id: id, type: type, pipeline: pipeline, run: run, step: step,
            severity: Severity(rawValue: severity) ?? .info, summary: summary?.string, details: details?.string,
            labels: labelPairs, attributes: attributeObject, url: url, time: Timestamp(milliseconds: time))
        event.timeGiven = time_given
        return StoredEvent(cursor: seq, event: event, receivedAt: Timestamp(milliseconds: received_at))
    }
}

struct RunRow: Codable, FetchableRecord, TableRecord {
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

    /// The ten columns in table order, for the hot path's cached statements.
    static func arguments(_ s: RunSummary) -> StatementArguments {
        var object = JSONObject()
        for (k, v) in s.counts.sorted(by: { $0.key < $1.key }) { object.append(k, .int(v)) }
        return [
            s.pipeline, s.run, s.status.rawValue, s.failedStep, s.startedAt.milliseconds, s.endedAt?.milliseconds,
            s.lastEventAt.milliseconds, s.lifecycleAt?.milliseconds, s.eventCount, JSONValue.object(object).serialized(),
        ]
    }

    /// A summary from the columns `status, failed_step, started_at, ended_at, last_event_at,
    /// lifecycle_at, event_count, counts`, read by index.
    static func summary(pipeline: String, run: String, row: Row) -> RunSummary {
        var s = RunSummary(pipeline: pipeline, run: run, first: Timestamp(milliseconds: row[2]))
        s.status = RunSummary.Status(rawValue: row[0]) ?? .running
        s.failedStep = row[1]
        s.endedAt = (row[3] as Int64?).map(Timestamp.init(milliseconds:))
        s.lastEventAt = Timestamp(milliseconds: row[4])
        s.lifecycleAt = (row[5] as Int64?).map(Timestamp.init(milliseconds:))
        s.eventCount = row[6]
        if let object = (try? JSONValue.parse(row[7] as String))?.objectValue {
            for (k, v) in object { s.counts[k] = v.doubleValue.map { Int($0) } ?? 0 }
        }
        return s
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
