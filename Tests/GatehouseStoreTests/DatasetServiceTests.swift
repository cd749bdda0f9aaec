import Foundation
import GatehouseCore
import GatehouseServices
@testable import GatehouseStore
import Synchronization
import Testing

/// The labelling use cases over the SQLite repository, as a pipeline and its labellers see
/// them: what is refused (and then left unchanged), what is announced, who gets which item.
struct DatasetServiceTests {
    static let t0 = Timestamp(milliseconds: 1_795_946_400_000)

    /// Every bus message published.
    final class Heard: Sendable {
        let messages = Mutex<[BusMessage]>([])
    }

    /// A service over a fresh database file, and every bus message it publishes.
    func service() throws -> (DatasetService, EventLog, Heard, String) {
        let path = freshStoreLocation("datasets")
        let bus = Bus()
        let log = EventLog(database: try openTestStore(path), bus: bus)
        let heard = Heard()
        bus.observe { message in heard.messages.withLock { $0.append(message) } }
        return (DatasetService(repository: SQLDatasetRepository(log: log), bus: bus, pageURL: { "http://x/annotate/\($0)" }), log, heard, path)
    }

    func spec(_ json: String) throws -> DatasetSpec { try DatasetSpec.parse(JSONValue.parse(json)).get() }

    func item(_ id: String, _ text: String) throws -> JSONValue { try JSONValue.parse(#"{"id": "\#(id)", "data": {"text": "\#(text)"}}"#) }

    func problem(_ work: () async throws -> Void) async -> Problem? {
        do { try await work() } catch let p as Problem { return p } catch { Issue.record("not a problem: \(error)") }
        return nil
    }

    func changes(_ heard: Heard, _ name: String) -> Int {
        heard.messages.withLock { $0.filter { if case .datasetChanged(name) = $0 { true } else { false } }.count }
    }

    @Test func createIsIdempotentAndAnotherDefinitionConflicts() async throws {
        let (datasets, _, _, path) = try service()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let a = try spec(#"{"name": "reviews", "task": "classification", "labels": ["pos", "neg"]}"#)
        let first = try await datasets.create(a, now: Self.t0)
        let again = try await datasets.create(a, now: Self.t0.adding(milliseconds: 1000))
        #expect(first.created && !again.created && again.info.createdAt == Self.t0)
        let b = try spec(#"{"name": "reviews", "task": "classification", "labels": ["pos", "neg", "meh"]}"#)
        let conflict = await problem { _ = try await datasets.create(b) }
        #expect(conflict?.status == 409 && conflict?.extensions["existing"]?.objectValue?["labels"]?.arrayValue?.count == 2)
        #expect(try await datasets.spec("reviews") == a)
        #expect(await problem { _ = try await datasets.spec("nope") }?.status == 404)
    }

    @Test func aBadItemRefusesTheWholeImportAndDuplicatesAreCounted() async throws {
        let (datasets, log, heard, path) = try service()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let spec = try await datasets.create(try spec(#"{"name": "d", "task": "classification", "labels": ["a", "b"]}"#)).info.spec

        let bad = datasets.beginImport(into: spec)
        try await bad.add(try item("i1", "one"))
        try await bad.add(try JSONValue.parse(#"{"id": "i2", "data": {}}"#))
        let refused = await problem { _ = try await bad.finish() }
        #expect(refused?.status == 422 && refused?.errors.map(\.index) == [1] && refused?.detail.hasPrefix("nothing was imported") == true)
        #expect(try await datasets.info("d").itemCount == 0)
        #expect(changes(heard, "d") == 0)

        let good = datasets.beginImport(into: spec)
        for id in ["i1", "i2", "i1"] { try await good.add(try item(id, "text \(id)")) }
        let committed = try await good.finish(now: Self.t0)
        #expect(committed.added == 2 && committed.duplicates == 1 && committed.total == 2)
        let again = datasets.beginImport(into: spec)
        try await again.add(try item("i2", "text i2"))
        try await again.add(try item("i3", "text i3"))
        #expect(try await again.finish(now: Self.t0).added == 1)
        // Each import that added something is announced once (a distinct id per import), named
        // after its first item: the first import holds seqs 1–2, so the second starts at 3.
        let events = try await log.events(EventFilter()).map(\.event)
        #expect(events.count == 2 && events[0].id.hasPrefix("dataset.d.items_added.1.") && events[1].id.hasPrefix("dataset.d.items_added.3."))
        #expect(events[0].attributes?["added"] == .int(2) && events[0].url == "http://x/annotate/d")
        #expect(changes(heard, "d") == 2)
        // An empty import is refused.
        #expect(await problem { _ = try await datasets.beginImport(into: spec).finish() }?.status == 422)
    }

    @Test func labelsAreCheckedCountedAndTheLastOneCompletesTheDataset() async throws {
        let (datasets, log, heard, path) = try service()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let spec = try await datasets.create(try spec(#"{"name": "ner", "task": "spans", "labels": ["PER"], "annotators_per_item": 2}"#)).info.spec
        let importing = datasets.beginImport(into: spec)
        try await importing.add(try item("x", "Ada Lovelace"))
        _ = try await importing.finish()

        // One item, two labels needed: two people are each served it, a third is not.
        #expect(try await datasets.next("ner", annotator: "web:a", now: Self.t0)?.item.id == "x")
        #expect(try await datasets.next("ner", annotator: "web:b", now: Self.t0)?.item.id == "x")
        #expect(try await datasets.next("ner", annotator: "web:c", now: Self.t0) == nil)

        // A span must lie within the item's text: refused naming the field, nothing stored.
        let wrong = await problem {
            _ = try await datasets.label("ner", item: "x", annotator: "web:a", raw: try JSONValue.parse(#"[{"start": 4, "end": 40, "label": "PER"}]"#))
        }
        #expect(wrong?.status == 422 && wrong?.errors.map(\.field) == ["spans[0]"])
        #expect(try await datasets.labelCount("ner", annotator: "web:a") == 0)
        #expect(await problem { _ = try await datasets.label("ner", item: "nope", annotator: "web:a", raw: .array([])) }?.status == 404)

        let span = try JSONValue.parse(#"[{"start": 0, "end": 3, "label": "PER"}]"#)
        let first = try await datasets.label("ner", item: "x", annotator: "web:a", raw: span, now: Self.t0)
        #expect(!first.itemComplete && first.value.arrayValue?.first?.objectValue?["text"] == .string("Ada"))
        let second = try await datasets.label("ner", item: "x", annotator: "web:b", raw: span, now: Self.t0)
        #expect(second.itemComplete && second.datasetComplete)
        // Full: a third person is refused; the first may still change their own label.
        #expect(await problem { _ = try await datasets.label("ner", item: "x", annotator: "web:c", raw: span) }?.status == 409)
        #expect(try await datasets.label("ner", item: "x", annotator: "web:a", raw: .array([]), now: Self.t0).itemComplete)

        let types = try await log.events(EventFilter()).map(\.event.type)
        #expect(types == ["dataset.items_added", "dataset.completed"])
        let progress = try await datasets.progress("ner", labeled: nil, agreement: nil)
        #expect(progress.reached && progress.target == 1 && progress.stats.labeled == 1)

        // Undo takes back b's label: the item needs a label again, and waiters are told.
        let before = changes(heard, "ner")
        #expect(try await datasets.undo("ner", annotator: "web:b", now: Self.t0) == "x")
        #expect(changes(heard, "ner") == before + 1)
        #expect(try await datasets.progress("ner", labeled: nil, agreement: nil).reached == false)
        #expect(try await datasets.undo("ner", annotator: "web:b", now: Self.t0) == nil)
    }

    /// Undo takes back the label given last — a changed one too. It went by the row's id, so
    /// after labelling a, then b, then changing a, it took back b (a hostile tester's find).
    @Test func undoTakesBackTheLabelGivenLastEvenAChangedOne() async throws {
        let (datasets, _, _, path) = try service()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let topics = try spec(#"{"name": "u", "task": "classification", "labels": ["x", "y"]}"#)
        _ = try await datasets.create(topics, now: Self.t0)
        let batch = datasets.beginImport(into: topics)
        for id in ["a", "b"] { try await batch.add(try item(id, "text \(id)")) }
        _ = try await batch.finish(now: Self.t0)
        _ = try await datasets.label("u", item: "a", annotator: "web:p", raw: .string("x"), now: Self.t0.adding(milliseconds: 1000))
        _ = try await datasets.label("u", item: "b", annotator: "web:p", raw: .string("x"), now: Self.t0.adding(milliseconds: 2000))
        _ = try await datasets.label("u", item: "a", annotator: "web:p", raw: .string("y"), now: Self.t0.adding(milliseconds: 3000))
        #expect(try await datasets.undo("u", annotator: "web:p", now: Self.t0.adding(milliseconds: 4000)) == "a")
        #expect(try await datasets.labelCount("u", annotator: "web:p") == 1)
        #expect(try await datasets.undo("u", annotator: "web:p", now: Self.t0.adding(milliseconds: 5000)) == "b")
    }

    @Test func skipsDeleteAndWhatIsLeftForAPerson() async throws {
        let (datasets, _, heard, path) = try service()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let spec = try await datasets.create(try spec(#"{"name": "s", "task": "classification", "labels": ["a", "b"]}"#)).info.spec
        let importing = datasets.beginImport(into: spec)
        for id in ["1", "2"] { try await importing.add(try item(id, "t")) }
        _ = try await importing.finish()

        try await datasets.skip("s", item: "1", annotator: "web:a", now: Self.t0)
        #expect(await problem { try await datasets.skip("s", item: "9", annotator: "web:a") }?.status == 404)
        #expect(try await datasets.remaining("s", annotator: "web:a") == 1)
        #expect(try await datasets.next("s", annotator: "web:a", now: Self.t0)?.item.id == "2")
        // Item 2 is leased to a: for b only item 1 is left (the inbox said "2 waiting" while
        // the page served b nothing more after item 1); a's own lease still counts for a.
        #expect(try await datasets.remaining("s", annotator: "web:b", now: Self.t0) == 1)
        #expect(try await datasets.remaining("s", annotator: "web:a", now: Self.t0) == 1)
        #expect(try await datasets.remaining("s", annotator: "web:b", now: Self.t0.adding(milliseconds: 10 * 60_000)) == 2)
        #expect(try await datasets.stats("s").skipped == 1)

        try await datasets.delete("s")
        #expect(changes(heard, "s") == 2)
        #expect(await problem { try await datasets.delete("s") }?.status == 404)
        #expect(await problem { _ = try await datasets.next("s", annotator: "web:a") }?.status == 404)
        #expect(await problem { _ = try await datasets.stats("s") }?.status == 404)
    }
}
