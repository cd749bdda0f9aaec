import Foundation
import GRDB
import GatehouseClient
import GatehouseCore
import GatehouseStore
import Testing

/// A full disk: writes are refused with a 503 that says so and asks for a later retry, change
/// nothing, and succeed again once there is room; reads go on meanwhile. SQLite's
/// `max_page_count` on the writer stands in for the disk (it fails writes with the very error a
/// full disk gives, SQLITE_FULL).
struct StorageFullTests {
    @Test(.disabled(if: testingPostgres, "a full disk is SQLite's SQLITE_FULL here; PostgreSQL's disk_full is not mapped"))
    func writesOnAFullDiskAre503sThatChangeNothing() async throws {
        try await InProcessServer.with { server in
            let database = try #require(server.database as? GatehouseDatabase)
            #expect(try await server.post("/v1/events", #"{"id":"before","type":"run.started","pipeline":"p","run":"r1"}"#).status == 202)
            #expect(try await server.post("/v1/datasets", #"{"name":"d","labels":["a","b"]}"#).status == 201)
            try await database.pool.writeWithoutTransaction { db in
                let pages = try Int.fetchOne(db, sql: "PRAGMA page_count")!
                _ = try Int.fetchOne(db, sql: "PRAGMA max_page_count = \(pages)")
            }
            let summary = String(repeating: "s", count: 900)
            let batch = "[" + (0..<300).map { #"{"id":"b\#($0)","type":"run.failed","pipeline":"p","run":"r\#($0)","summary":"\#(summary)"}"# }.joined(separator: ",") + "]"
            let single = #"{"id":"one","type":"run.failed","pipeline":"p","run":"big","details":"\#(String(repeating: "x", count: 20_000))"}"#
            for body in [batch, single] {
                let refused = try await server.post("/v1/events", body)
                #expect(refused.status == 503, "\(refused.text)")
                #expect(refused.header("Retry-After") == "30")
                #expect(refused.header("Content-Type") == "application/problem+json")
                #expect(refused.json["detail"]?.stringValue?.contains("disk is full; nothing was changed") == true, "\(refused.text)")
            }
            // Through the router too (the events above are answered on the event loop).
            let items = "[" + (0..<200).map { #"{"id":"i\#($0)","data":{"text":"\#(summary)"}}"# }.joined(separator: ",") + "]"
            let refusedItems = try await server.post("/v1/datasets/d/items", items)
            #expect(refusedItems.status == 503 && refusedItems.header("Retry-After") == "30", "\(refusedItems.text)")
            // Reads go on, and show nothing of what was refused.
            #expect(try await server.allEvents().compactMap { $0["id"]?.stringValue } == ["before"])
            #expect(try await server.get("/readyz").status == 200)
            let stats = try await server.json("/v1/datasets/d/stats")
            #expect(stats["labeled"] == .int(0) && stats["unlabeled"] == .int(0), "\(stats)")

            try await database.pool.writeWithoutTransaction { db in
                _ = try Int.fetchOne(db, sql: "PRAGMA max_page_count = 1073741823")
            }
            #expect(try await server.post("/v1/events", batch).status == 202)
            #expect(try await server.allEvents().count == 301)
            #expect(try await server.post("/v1/datasets/d/items", items).status == 200)
        }
    }
}
