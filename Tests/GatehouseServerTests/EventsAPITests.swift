import Foundation
import GatehouseClient
import GatehouseCore
import Testing

@Suite(.serialized)
struct EventsAPITests {
    @Test func ingestsEveryMediaTypeAndListsThem() async throws {
        try await InProcessServer.with { server in
        var r = try await server.post("/v1/events", #"{"type":"run.started","pipeline":"train","run":"r1","id":"e1","labels":{"team":"ml"},"attributes":{"big":12345678901234567890}}"#)
        #expect(r.status == 202)
        #expect(r.json["accepted"] == .int(1))
        #expect(r.json["ids"] == .array([.string("e1")]))

        r = try await server.post("/v1/events", #"[{"type":"step.started","pipeline":"train","run":"r1","step":"fit"},{"type":"step.failed","pipeline":"train","run":"r1","step":"fit","summary":"OOM"}]"#)
        #expect(r.status == 202)
        #expect(r.json["accepted"] == .int(2))

        r = try await server.post("/v1/events", "{\"type\":\"a.b\",\"pipeline\":\"p2\"}\n\n{\"type\":\"a.c\",\"pipeline\":\"p2\"}\n", contentType: "application/x-ndjson")
        #expect(r.status == 202)
        #expect(r.json["accepted"] == .int(2))

        r = try await server.post("/v1/events", #"{"specversion":"1.0","id":"ce-1","source":"/orchestrator/pipelines/ingest","type":"run.failed","subject":"r7","time":"2026-11-29T10:00:00Z","data":{"summary":"boom","gpu":"a100"},"traceparent":"00-abc"}"#, contentType: "application/cloudevents+json")
        #expect(r.status == 202, "\(r.text)")

        r = try await server.post("/v1/events", #"[{"specversion":"1.0","id":"ce-2","source":"s/p3","type":"x.y"},{"specversion":"1.0","id":"ce-3","source":"s/p3","type":"x.z","data":{"pipeline":"explicit"}}]"#, contentType: "application/cloudevents-batch+json")
        #expect(r.status == 202, "\(r.text)")
        #expect(r.json["accepted"] == .int(2))

        r = try await server.post("/v1/events", #"{"step":"fit","severity":"critical"}"#, headers: ["ce-specversion": "1.0", "ce-id": "ce-4", "ce-source": "/x/bin", "ce-type": "step.failed", "ce-subject": "r8"])
        #expect(r.status == 202, "\(r.text)")

        let events = try await server.allEvents()
        #expect(events.count == 9)
        let byID = Dictionary(uniqueKeysWithValues: events.map { ($0["id"]!.stringValue!, $0) })
        // Numbers round-trip exactly, even beyond 64-bit doubles.
        #expect(byID["e1"]?["attributes"] == .object(JSONObject([("big", .number("12345678901234567890"))])))
        #expect(byID["e1"]?["labels"] == .object(JSONObject([("team", .string("ml"))])))
        let ce1 = byID["ce-1"]!
        #expect(ce1["pipeline"] == .string("ingest"))
        #expect(ce1["run"] == .string("r7"))
        #expect(ce1["severity"] == .string("error"))
        #expect(ce1["summary"] == .string("boom"))
        #expect(ce1["time"] == .string("2026-11-29T10:00:00.000Z"))
        #expect(ce1["attributes"]?.objectValue?["gpu"] == .string("a100"))
        #expect(ce1["attributes"]?.objectValue?["traceparent"] == .string("00-abc"))
        #expect(byID["ce-3"]?["pipeline"] == .string("explicit"))
        #expect(byID["ce-4"]?["pipeline"] == .string("bin"))
        #expect(byID["ce-4"]?["run"] == .string("r8"))
        #expect(byID["ce-4"]?["severity"] == .string("critical"))
        // Cursors increase in commit order.
        let cursors = events.map { Int($0["cursor"]!.stringValue!)! }
        #expect(cursors == cursors.sorted())
        }
    }

    @Test func badInputIsRefusedClearlyAndChangesNothing() async throws {
        try await offThePool {
            // In a process of its own: the server closes the connection after these answers, which
            // the in-process test client does not survive.
            let server = try ServerProcess(environment: ["GATEHOUSE_MAX_BODY": "4096"])
            func problem(_ r: HTTPResult) -> JSONObject {
                #expect(r.header("Content-Type") == "application/problem+json")
                return r.json
            }
            // Malformed JSON → 400 with the position.
            var r = try server.post("/v1/events", #"{"type": "run.failed", "pipeline": }"#)
            #expect(r.status == 400)
            #expect(problem(r)["detail"]?.stringValue?.contains("column") == true)

            // A batch with one bad item is refused whole, naming index and field.
            r = try server.post("/v1/events", #"[{"type":"run.started","pipeline":"p","id":"ok-1"},{"type":"run.failed"},{"type":"no dots","pipeline":"p","severity":"fatal"}]"#)
            #expect(r.status == 422)
            let errors = problem(r)["errors"]?.arrayValue?.compactMap(\.objectValue) ?? []
            #expect(errors.contains { $0["index"] == .int(1) && $0["field"] == .string("pipeline") })
            #expect(errors.contains { $0["index"] == .int(2) && $0["field"] == .string("type") })
            #expect(errors.contains { $0["index"] == .int(2) && $0["field"] == .string("severity") })

            // NDJSON errors name the line.
            r = try server.post("/v1/events", "{\"type\":\"a.b\",\"pipeline\":\"p\"}\nnot json\n", contentType: "application/x-ndjson")
            #expect(r.status == 422)
            #expect(problem(r)["errors"]?.arrayValue?.first?.objectValue?["line"] == .int(2))

            // Wrong types, unknown fields, limits.
            for (body, field) in [
                (#"{"type":"a.b","pipeline":"p","labels":{"team":1}}"#, "labels.team"),
                (#"{"type":"a.b","pipeline":"p","colour":"red"}"#, "colour"),
                (#"{"type":"a.b","pipeline":"p","summary":"two\nlines"}"#, "summary"),
                (#"{"type":"a.b","pipeline":"p","url":"ftp://x"}"#, "url"),
                (#"{"type":"a.b","pipeline":"p","time":"yesterday"}"#, "time"),
                (#"{"type":"a.b","pipeline":"p","attributes":[1]}"#, "attributes"),
                ("{\"type\":\"a.b\",\"pipeline\":\"\(String(repeating: "x", count: 257))\"}", "pipeline"),
            ] {
                r = try server.post("/v1/events", body)
                #expect(r.status == 422, "\(body)")
                #expect(problem(r)["errors"]?.arrayValue?.first?.objectValue?["field"] == .string(field), "\(body) → \(r.text)")
            }

            // Too large → 413; unknown media type → 415; empty body → 400.
            r = try server.post("/v1/events", "{\"type\":\"a.b\",\"pipeline\":\"p\",\"details\":\"\(String(repeating: "d", count: 5000))\"}")
            #expect(r.status == 413)
            #expect(problem(r)["detail"]?.stringValue?.contains("4096") == true)
            r = try server.post("/v1/events", "type=a.b", contentType: "application/x-www-form-urlencoded")
            #expect(r.status == 415)
            r = try server.post("/v1/events", "")
            #expect(r.status == 400)
            r = try server.post("/v1/events", #"{"specversion":"0.3","id":"x","source":"s","type":"a.b"}"#, contentType: "application/cloudevents+json")
            #expect(r.status == 422)

            #expect(try server.allEvents().isEmpty)
        }
    }

    @Test func batchOverTheItemLimitIs413() async throws {
        try await offThePool {
            // In a process of its own: the server closes the connection after these answers, which
            // the in-process test client does not survive.
            let server = try ServerProcess()
            let items = (0..<1001).map { _ in #"{"type":"a.b","pipeline":"p"}"# }.joined(separator: ",")
            let r = try server.post("/v1/events", "[\(items)]")
            #expect(r.status == 413)
            #expect(try server.allEvents().isEmpty)
        }
    }

    @Test func duplicatesAreRecordedOnce() async throws {
        try await InProcessServer.with { server in
        let body = #"[{"id":"d1","type":"a.b","pipeline":"p"},{"id":"d2","type":"a.b","pipeline":"p"}]"#
        #expect(try await server.post("/v1/events", body).json["accepted"] == .int(2))
        let again = try await server.post("/v1/events", #"[{"id":"d1","type":"a.b","pipeline":"p"},{"id":"d3","type":"a.b","pipeline":"p"},{"id":"d3","type":"a.b","pipeline":"p"}]"#)
        #expect(again.status == 202)
        #expect(again.json["accepted"] == .int(1))
        #expect(again.json["duplicates"] == .int(2))
        #expect(again.json["ids"] == .array(["d1", "d3", "d3"].map(JSONValue.string)))
        #expect(try await server.allEvents().map { $0["id"]!.stringValue! } == ["d1", "d2", "d3"])
        }
    }

    @Test func filtersAndCursorPagination() async throws {
        try await InProcessServer.with { server in
        var batch: [String] = []
        for i in 0..<25 {
            batch.append(#"{"type":"\#(i % 2 == 0 ? "step.started" : "step.failed")","pipeline":"\#(i < 10 ? "a" : "b")","run":"r\#(i % 3)"}"#)
        }
        #expect(try await server.post("/v1/events", "[\(batch.joined(separator: ","))]").status == 202)
        var page = try await server.json("/v1/events?limit=10")
        #expect(page["events"]?.arrayValue?.count == 10)
        guard case .string(let next)? = page["next"] else { Issue.record("no next cursor"); return }
        page = try await server.json("/v1/events?limit=10&after=\(next)")
        #expect(page["events"]?.arrayValue?.first?.objectValue?["cursor"] == .string(String(Int(next)! + 1)))
        page = try await server.json("/v1/events?limit=10&after=20")
        #expect(page["events"]?.arrayValue?.count == 5)
        #expect(page["next"] == .null)

        #expect(try await server.allEvents("pipeline=a").count == 10)
        #expect(try await server.allEvents("pipeline=b&type=step.failed").count == 7)
        #expect(try await server.allEvents("run=r0").count == 9)
        #expect(try await server.allEvents("type=step.failed,step.started").count == 25)
        #expect(try await server.get("/v1/events?limit=0").status == 422)
        #expect(try await server.get("/v1/events?after=abc").status == 422)
        }
    }

    @Test func runsAreDerivedFromEvents() async throws {
        try await InProcessServer.with { server in
        let body = """
            [{"type":"run.started","pipeline":"train","run":"r1","time":"2026-11-29T10:00:00Z"},
             {"type":"step.failed","pipeline":"train","run":"r1","step":"fit","time":"2026-11-29T10:05:00Z"},
             {"type":"run.failed","pipeline":"train","run":"r1","time":"2026-11-29T10:06:30Z"},
             {"type":"run.started","pipeline":"train","run":"r2","time":"2026-11-29T11:00:00Z"},
             {"type":"run.succeeded","pipeline":"train","run":"r2","time":"2026-11-29T11:10:00Z"},
             {"type":"run.started","pipeline":"eval","run":"r3","time":"2026-11-29T12:00:00Z"}]
            """
        #expect(try await server.post("/v1/events", body).status == 202)
        let r1 = try await server.json("/v1/runs/r1")
        #expect(r1["status"] == .string("failed"))
        #expect(r1["failed_step"] == .string("fit"))
        #expect(r1["started_at"] == .string("2026-11-29T10:00:00.000Z"))
        #expect(r1["ended_at"] == .string("2026-11-29T10:06:30.000Z"))
        #expect(r1["duration_seconds"] == .int(390))
        #expect(r1["events"] == .int(3))
        #expect(r1["counts"]?.objectValue?["step.failed"] == .int(1))
        #expect(r1["timeline"]?.arrayValue?.count == 3)
        #expect(try await server.json("/v1/runs/r2")["status"] == .string("succeeded"))
        #expect(try await server.json("/v1/runs/r3")["status"] == .string("running"))
        #expect(try await server.get("/v1/runs/nope").status == 404)

        let all = try await server.json("/v1/runs")["runs"]?.arrayValue ?? []
        #expect(all.compactMap { $0.objectValue?["run"]?.stringValue } == ["r3", "r2", "r1"])
        #expect(try await server.json("/v1/runs?pipeline=train")["runs"]?.arrayValue?.count == 2)
        #expect(try await server.json("/v1/runs?status=failed")["runs"]?.arrayValue?.count == 1)
        #expect(try await server.get("/v1/runs?status=exploded").status == 422)

        // A later event updates the stored summary: a re-run after the failure.
        #expect(try await server.post("/v1/events", #"{"type":"run.started","pipeline":"train","run":"r1","time":"2026-11-29T13:00:00Z"}"#).status == 202)
        #expect(try await server.json("/v1/runs/r1")["status"] == .string("running"))
        }
    }

    @Test func operationsEndpoints() async throws {
        try await offThePool {
            // In a process of its own: /metrics counts what this server alone did.
            let server = try ServerProcess()
            #expect(try server.get("/healthz").status == 200)
            #expect(try server.get("/readyz").status == 200)
            _ = try server.post("/v1/events", #"{"type":"a.b","pipeline":"p"}"#)
            let metrics = try server.get("/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.text.contains("gatehouse_events_ingested_total 1"))
            #expect(metrics.text.contains("gatehouse_http_request_duration_seconds_bucket"))
            #expect(metrics.text.contains("gatehouse_store_commit_duration_seconds_count"))
            // Every answer carries a request id.
            #expect(try server.get("/healthz").header("X-Request-Id")?.isEmpty == false)
        }
    }
    /// An id is an idempotency key: the same event again is a duplicate; another event under a
    /// known id is refused (409) and a batch that repeats an id with other content is refused
    /// whole (422) — nothing is stored and nothing dropped silently.
    @Test func aReusedIDWithOtherContentIsRefusedNotDropped() async throws {
        try await InProcessServer.with { server in
        #expect(try await server.post("/v1/events", #"{"id":"k1","type":"run.failed","pipeline":"p","summary":"first"}"#).status == 202)
        // The same content again, with no time given: an idempotent duplicate.
        let again = try await server.post("/v1/events", #"{"id":"k1","type":"run.failed","pipeline":"p","summary":"first"}"#)
        #expect(again.status == 202)
        #expect(again.json["duplicates"] == .int(1) && again.json["accepted"] == .int(0))
        // Other content under the same id: 409 naming it, and the stored event is unchanged.
        let conflict = try await server.post("/v1/events", #"{"id":"k1","type":"run.failed","pipeline":"p","summary":"second"}"#)
        #expect(conflict.status == 409, "\(conflict.text)")
        #expect(conflict.header("Content-Type")?.hasPrefix("application/problem+json") == true)
        #expect(conflict.json["detail"]?.stringValue?.contains("k1") == true)
        // In a batch: the conflicting item refuses the whole batch, the new one is not stored.
        let mixed = try await server.post("/v1/events", #"[{"id":"k2","type":"a.b","pipeline":"p"},{"id":"k1","type":"run.failed","pipeline":"p","summary":"third"}]"#)
        #expect(mixed.status == 409)
        // Two different events under one id in one request: 422 naming both items.
        let twice = try await server.post("/v1/events", #"[{"id":"k3","type":"a.b","pipeline":"p"},{"id":"k3","type":"a.b","pipeline":"other"}]"#)
        #expect(twice.status == 422)
        #expect(twice.json["detail"]?.stringValue?.contains("item 1") == true && twice.json["detail"]?.stringValue?.contains("item 0") == true, "\(twice.text)")
        let stored = try await server.allEvents()
        #expect(stored.map { $0["id"]!.stringValue! } == ["k1"])
        #expect(stored.first?["summary"] == .string("first"))
        // The same event twice in one request is fine: one accepted, one duplicate.
        let same = try await server.post("/v1/events", #"[{"id":"k4","type":"a.b","pipeline":"p"},{"id":"k4","type":"a.b","pipeline":"p"}]"#)
        #expect(same.status == 202 && same.json["accepted"] == .int(1) && same.json["duplicates"] == .int(1))
        }
    }
}

/// The example payloads in webhooks/events are accepted as documented.
@Suite struct FixtureTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("webhooks/events")

    @Test func everyExampleEventIsAccepted() async throws {
        try await InProcessServer.with { server in
        let cases: [(String, String, Int)] = [
            ("event.json", "application/json", 1), ("batch.json", "application/json", 4),
            ("events.ndjson", "application/x-ndjson", 2), ("cloudevent.json", "application/cloudevents+json", 1),
            ("cloudevents-batch.json", "application/cloudevents-batch+json", 2),
        ]
        for (file, type, count) in cases {
            let body = try String(contentsOf: Self.folder.appendingPathComponent(file), encoding: .utf8)
            let r = try await server.post("/v1/events", body, contentType: type)
            #expect(r.status == 202, "\(file): \(r.text)")
            #expect(r.json["accepted"] == .int(count), "\(file)")
        }
        #expect(try await server.json("/v1/runs/r42")["status"] == .string("failed"))
        #expect(try await server.json("/v1/runs/n-1129")["status"] == .string("succeeded"))
        #expect(try await server.json("/v1/runs/r42")["failed_step"] == .string("fit"))
        }
    }
}
