import Foundation
import GatehouseClient
import GatehouseCore
import Testing

@Suite(.serialized)
struct DurabilityTests {
    /// kill -9 while events are being acknowledged under load; every acknowledged event must be
    /// there exactly once after a restart on the same file.
    @Test func everyAcknowledgedEventSurvivesKillDashNine() throws {
        let dir = TempDir()
        let server = try ServerProcess(dir: dir)
        let url = server.url
        let acknowledged = AckLog()
        let writers = 8
        let group = DispatchGroup()
        for w in 0..<writers {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                let client = HTTPClient(connectTimeout: 1, timeout: 5)
                var i = 0
                while true {
                    // Mix single events and batches; ids are unique per writer and sequence.
                    let size = i % 3 == 0 ? 10 : 1
                    let ids = (0..<size).map { "w\(w)-\(i)-\($0)" }
                    let body = "[" + ids.map { #"{"id":"\#($0)","type":"step.started","pipeline":"crash","run":"w\#(w)"}"# }.joined(separator: ",") + "]"
                    guard let r = try? client.send(method: "POST", url: url + "/v1/events", headers: ["Content-Type": "application/json"], body: Array(body.utf8)) else { return }
                    if r.status == 202 { acknowledged.add(ids) }
                    i += 1
                }
            }
        }
        Thread.sleep(forTimeInterval: 1.5)
        server.kill()
        group.wait()
        let acked = acknowledged.all
        #expect(acked.count > 100, "too little load to mean anything: \(acked.count)")

        let restarted = try ServerProcess(dir: dir, db: server.db)
        let stored = try restarted.allEvents("pipeline=crash").map { $0["id"]!.stringValue! }
        let storedSet = Set(stored)
        #expect(stored.count == storedSet.count, "an event was stored twice")
        let missing = acked.filter { !storedSet.contains($0) }
        #expect(missing.isEmpty, "\(missing.count) acknowledged events lost, e.g. \(missing.prefix(5))")
        // Runs were updated in the same transactions as their events.
        let runs = try restarted.json("/v1/runs?pipeline=crash")["runs"]?.arrayValue ?? []
        let counted = runs.compactMap { $0.objectValue?["events"]?.doubleValue }.reduce(0, +)
        #expect(Int(counted) == stored.count)
    }

    @Test func sigtermFinishesInFlightWorkAndExitsCleanly() throws {
        let dir = TempDir()
        let server = try ServerProcess(dir: dir)
        let stream = StreamReader(url: server.url + "/v1/events/stream?after=0")
        #expect(stream.wait { _, raw in raw.contains("connected") })
        #expect(try server.post("/v1/events", #"{"id":"s1","type":"a.b","pipeline":"p"}"#).status == 202)
        server.signal(SIGTERM)
        // The open stream is closed by the server, and the process exits 0.
        #expect(stream.done.wait(timeout: .now() + 10) == .success)
        #expect(server.waitForExit(timeout: 10) == 0)
        let restarted = try ServerProcess(dir: dir, db: server.db)
        #expect(try restarted.allEvents().map { $0["id"]!.stringValue! } == ["s1"])
    }
}

final class AckLog: @unchecked Sendable {
    private let lock = NSLock()
    private var ids: [String] = []
    func add(_ new: [String]) { lock.lock(); ids += new; lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return ids }
}
