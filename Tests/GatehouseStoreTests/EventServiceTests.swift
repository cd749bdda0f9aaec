import Foundation
import GatehouseCore
import GatehouseServices
import GatehouseStore
import Testing

/// Ingest as a use case over the `EventStore` protocol: bad input is refused naming the field
/// and writes nothing; good input is durable when `ingest` returns.
struct EventServiceTests {
    @Test func ingestValidatesThenAppends() async throws {
        let path = freshStoreLocation("events")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let service = EventService(store: EventLog(database: try openTestStore(path), bus: Bus()), intake: EventIntake(maxItems: 10))

        // One bad event in a batch refuses the batch, naming the field.
        let bad = Array(#"[{"type":"run.failed","pipeline":"p"},{"type":"run.failed","pipeline":"p","severity":"loud"}]"#.utf8)
        do {
            _ = try await service.ingest(bad, mediaType: .json)
            Issue.record("a bad batch was accepted")
        } catch let problem as Problem {
            #expect(problem.status == 422)
            #expect(problem.errors.map(\.field) == ["severity"] && problem.errors.map(\.index) == [1])
        }
        #expect(try await service.store.count() == 0)

        let good = Array("{\"id\":\"a\",\"type\":\"run.failed\",\"pipeline\":\"p\",\"run\":\"r1\"}\n{\"id\":\"b\",\"type\":\"run.succeeded\",\"pipeline\":\"p\",\"run\":\"r1\"}\n".utf8)
        let outcome = try await service.ingest(good, mediaType: .ndjson)
        #expect(outcome.accepted == 2 && outcome.ids == ["a", "b"])
        #expect(try await service.events(EventFilter()).map(\.event.id) == ["a", "b"])
        let run = try #require(try await service.run("r1", pipeline: "p"))
        #expect(run.0.status == .succeeded && run.1.count == 2)
    }
}
