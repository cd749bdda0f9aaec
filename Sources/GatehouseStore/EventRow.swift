import GatehouseCore

/// How an event is stored in `events`: the hot paths bind and read these columns by index.
enum EventRow {
    static let columnNames = ["seq", "id", "type", "pipeline", "run", "step", "severity", "summary", "details", "labels", "attributes", "url", "time", "received_at", "time_given"]
    static let columnCount = columnNames.count

    /// The columns `storedEvent(_:at:)` reads, in its order, for a table aliased `alias`.
    static func columns(_ alias: String) -> String {
        columnNames.map { "\(alias).\($0)" }.joined(separator: ", ")
    }

    /// The same, unqualified.
    static let selectColumns = columnNames.joined(separator: ", ")

    /// An event's row in `columnNames` order, from the columns its insert binds (`id` …
    /// `time_given`, `received_at` bound last).
    static func values(seq: Int64, _ inserted: [SQLValue], receivedAt: Timestamp) -> [SQLValue] {
        [.int(seq)] + inserted[0..<12] + [.int(receivedAt.milliseconds), inserted[12]]
    }

    /// An event read by column index from `row[offset...]` (see `columns`).
    static func storedEvent(_ row: any SQLRow, at offset: Int = 0) -> StoredEvent {
        var labelPairs: [(key: String, value: String)] = []
        if let labels = row[offset + 9] as String?, let object = (try? JSONValue.parse(labels))?.objectValue {
            labelPairs = object.compactMap { key, value in value.stringValue.map { (key, $0) } }
        }
        let attributeObject = (row[offset + 10] as String?).flatMap { (try? JSONValue.parse($0))?.objectValue }
        var event = Event(
            id: row[offset + 1], type: row[offset + 2], pipeline: row[offset + 3], run: row[offset + 4], step: row[offset + 5],
            severity: Severity(rawValue: row[offset + 6]) ?? .info,
            summary: row[offset + 7], details: row[offset + 8],
            labels: labelPairs, attributes: attributeObject, url: row[offset + 11], time: Timestamp(milliseconds: row[offset + 12]))
        event.timeGiven = row[offset + 14]
        return StoredEvent(cursor: row[offset], event: event, receivedAt: Timestamp(milliseconds: row[offset + 13]))
    }
}

/// How a run's summary is stored in `runs`.
enum RunRow {
    static let selectColumns = "pipeline, run, status, failed_step, started_at, ended_at, last_event_at, lifecycle_at, event_count, counts"

    /// The ten columns in table order, for the hot path's statements.
    static func arguments(_ s: RunSummary) -> SQLArguments {
        var object = JSONObject()
        for (k, v) in s.counts.sorted(by: { $0.key < $1.key }) { object.append(k, .int(v)) }
        // Built as values, not through the array literal of existentials (per run, per commit).
        return SQLArguments(values: [
            .text(s.pipeline), .text(s.run), .text(s.status.rawValue), s.failedStep.map(SQLValue.text) ?? .null, .int(s.startedAt.milliseconds),
            s.endedAt.map { .int($0.milliseconds) } ?? .null, .int(s.lastEventAt.milliseconds), s.lifecycleAt.map { .int($0.milliseconds) } ?? .null,
            .int(Int64(s.eventCount)), .text(JSONValue.object(object).serialized()),
        ])
    }

    /// A summary from the columns `status, failed_step, started_at, ended_at, last_event_at,
    /// lifecycle_at, event_count, counts` at `offset`, read by index.
    static func summary(pipeline: String, run: String, row: any SQLRow, at o: Int = 0) -> RunSummary {
        var s = RunSummary(pipeline: pipeline, run: run, first: Timestamp(milliseconds: row[o + 2]))
        s.status = RunSummary.Status(rawValue: row[o]) ?? .running
        s.failedStep = row[o + 1]
        s.endedAt = (row[o + 3] as Int64?).map(Timestamp.init(milliseconds:))
        s.lastEventAt = Timestamp(milliseconds: row[o + 4])
        s.lifecycleAt = (row[o + 5] as Int64?).map(Timestamp.init(milliseconds:))
        s.eventCount = row[o + 6]
        if let object = (try? JSONValue.parse(row[o + 7] as String))?.objectValue {
            for (k, v) in object { s.counts[k] = v.doubleValue.map { Int($0) } ?? 0 }
        }
        return s
    }

    /// A whole row read with `selectColumns`.
    static func summary(_ row: any SQLRow) -> RunSummary {
        summary(pipeline: row[0], run: row[1], row: row, at: 2)
    }
}
