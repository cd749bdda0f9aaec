import Foundation
import GatehouseClient
import NIOCore

/// `gatehouse-bench --deliveries`: deliveries/s from ingest to a local sink answering 200 at
/// once, for 1 and 4 receivers, and ingest→sink latency at a steady 1,000 events/s.
enum DeliveryBench {
    static func run(binary: String, scale: Int) throws {
        let templates = ProcessInfo.processInfo.environment["GATEHOUSE_TEMPLATES"] ?? FileManager.default.currentDirectoryPath + "/templates"
        guard FileManager.default.fileExists(atPath: templates + "/webhook/event.mustache") else {
            print("templates not found at \(templates): run from the repository root or set GATEHOUSE_TEMPLATES")
            exit(1)
        }
        let sink = BenchSink()
        let sinkPort = try sink.start()
        defer { sink.stop() }
        print("gatehouse delivery benchmark — \(ProcessInfo.processInfo.activeProcessorCount) cores, sink and load generator on the same machine")
        print("")
        for receivers in [1, 4] {
            sink.reset()
            let server = try BenchServer(binary: binary, durability: "full", config: try config(receivers: receivers, sinkPort: sinkPort), environment: ["GATEHOUSE_TEMPLATES": templates])
            defer { server.stop() }
            let events = 20_000 * scale
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try runLoad(port: server.port, connections: 4, total: events / 100, makeBody: Bench.batchBody)
            let ingested = DispatchTime.now().uptimeNanoseconds
            let expected = events * receivers
            let deadline = Date().addingTimeInterval(120)
            while sink.count < expected && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
            let done = DispatchTime.now().uptimeNanoseconds
            let seconds = Double(done - start) / 1e9
            print(String(format: "  %d receiver(s): %d deliveries in %.2f s = %8.0f deliveries/s (ingest took %.2f s)%@",
                         receivers, sink.count, seconds, Double(sink.count) / seconds, Double(ingested - start) / 1e9,
                         sink.count < expected ? " — INCOMPLETE, expected \(expected)" : ""))
        }

        // Latency at a steady 1,000 events/s, one event per request.
        sink.reset()
        let server = try BenchServer(binary: binary, durability: "full", config: try config(receivers: 1, sinkPort: sinkPort), environment: ["GATEHOUSE_TEMPLATES": templates])
        defer { server.stop() }
        // Open loop: four senders, each one event every 4 ms, so a slow commit does not lower
        // the offered rate.
        let count = 5000 * scale
        let senders = 4
        let sent = SentLog()
        let begin = DispatchTime.now().uptimeNanoseconds
        let port = server.port
        let group = DispatchGroup()
        for s in 0..<senders {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                let client = HTTPClient(connectTimeout: 2, timeout: 10)
                for i in stride(from: s, to: count, by: senders) {
                    let due = begin + UInt64(i) * 1_000_000
                    let now = DispatchTime.now().uptimeNanoseconds
                    if due > now { usleep(UInt32((due - now) / 1000)) }
                    let id = "lat-\(i)"
                    let t = DispatchTime.now().uptimeNanoseconds
                    _ = try? client.send(method: "POST", url: "http://127.0.0.1:\(port)/v1/events", headers: ["Content-Type": "application/json"],
                                         body: Array(#"{"id":"\#(id)","type":"step.failed","pipeline":"bench","run":"r1","summary":"latency probe"}"#.utf8))
                    sent.add(id, t)
                }
            }
        }
        group.wait()
        let deadline = Date().addingTimeInterval(30)
        while sink.count < count && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        let rate = Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - begin) / 1e9)
        let latencies = sent.all.compactMap { id, t in sink.arrival(of: id).map { Double($0 - t) / 1e6 } }.sorted()
        func p(_ q: Double) -> Double { latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * q))] }
        print(String(format: "  ingest→sink latency at ~%.0f events/s: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d of %d delivered)",
                     rate, p(0.5), p(0.99), latencies.last ?? 0, latencies.count, count))
    }

    static func config(receivers: Int, sinkPort: Int) throws -> String {
        var yaml = "receivers:\n"
        for i in 0..<receivers {
            yaml += "  - name: r\(i)\n    webhook: { url: http://127.0.0.1:\(sinkPort)/r\(i), secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw }\n"
        }
        // Every event its own group, so each is its own message (no digests to flatter the rate).
        yaml += "route:\n  receiver: r0\n  group_by: ['...']\n  routes:\n"
        for i in 0..<receivers {
            yaml += "    - receiver: r\(i)\n      continue: true\n"
        }
        let path = NSTemporaryDirectory() + "gatehouse-bench-\(receivers).yml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

final class SentLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(String, UInt64)] = []
    func add(_ id: String, _ t: UInt64) { lock.lock(); items.append((id, t)); lock.unlock() }
    var all: [(String, UInt64)] { lock.lock(); defer { lock.unlock() }; return items }
}
