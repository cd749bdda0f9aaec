import BenchNet
import Foundation

/// The alerts benchmark's receiver: `BenchNet`'s C sink (one thread, epoll), standing where
/// the "fast C sink" stood. It answers `200 ok` at once, as `BenchSink` does, and notes
/// when the event numbered n (`"id":"a<n>"`, the first after `"events"`) first arrived.
final class CSink {
    let port: Int

    init() throws {
        let port = bench_sink_start()
        guard port > 0 else { throw BenchError("the C sink could not start: errno \(errno)") }
        self.port = Int(port)
    }

    var count: Int { Int(bench_sink_count()) }
    func reset() { bench_sink_reset() }
    func stop() { bench_sink_stop() }

    /// When each event number first arrived (CLOCK_MONOTONIC nanoseconds), read after a phase.
    func arrivals() -> [Int: UInt64] {
        let capacity = count + 1024
        var numbers = [Int64](repeating: 0, count: capacity)
        var times = [UInt64](repeating: 0, count: capacity)
        let n = bench_sink_arrivals(&numbers, &times, capacity)
        var first: [Int: UInt64] = [:]
        first.reserveCapacity(n)
        for i in 0..<n where first[Int(numbers[i])] == nil { first[Int(numbers[i])] = times[i] }
        return first
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Requests laid out for the C load generator, built before its clock starts.
final class CRequests {
    let count: Int
    private let storage: UnsafeMutableRawBufferPointer
    fileprivate let table: [bench_request]

    init(_ requests: [[UInt8]]) {
        count = requests.count
        storage = .allocate(byteCount: max(1, requests.reduce(0) { $0 + $1.count }), alignment: 1)
        var table: [bench_request] = []
        table.reserveCapacity(count)
        var offset = 0
        for request in requests {
            let start = storage.baseAddress!.advanced(by: offset)
            request.withUnsafeBytes { start.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            table.append(bench_request(data: start.assumingMemoryBound(to: CChar.self), length: request.count))
            offset += request.count
        }
        self.table = table
    }

    deinit { storage.deallocate() }
}

/// `runLoad`'s closed loop in C (`BenchNet`): each connection sends its next request as soon
/// as its answer is in. Also returns when each request was sent (CLOCK_MONOTONIC
/// nanoseconds, as the C sink's arrivals).
func runCLoad(ports: [Int], connections: Int, requests: CRequests) throws -> (LoadResult, sentAt: [UInt64]) {
    let count = requests.count
    var sent = [UInt64](repeating: 0, count: count)
    var latency = [UInt64](repeating: 0, count: count)
    var status = [UInt16](repeating: 0, count: count)
    let cPorts = ports.map { Int32($0) }
    let started = bench_now_ns()
    let code = bench_load_run(cPorts, Int32(cPorts.count), Int32(connections), requests.table, Int32(count), &sent, &latency, &status)
    let seconds = Double(bench_now_ns() - started) / 1e9
    guard code == 0 else { throw BenchError("the load generator failed: errno \(errno)") }
    var statuses: [UInt: Int] = [:]
    for s in status { statuses[UInt(s), default: 0] += 1 }
    let failed = status.filter { !(200..<300).contains($0) }.count
    let sorted = latency.sorted()
    func percentile(_ p: Double) -> Double {
        sorted.isEmpty ? 0 : Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
    }
    return (LoadResult(requests: count, failed: failed, seconds: seconds, p50: percentile(0.5), p99: percentile(0.99), statuses: statuses), sent)
}

/// A whole HTTP/1.1 request as the Swift load generator sends it.
func httpRequest(method: String = "POST", path: String = "/v1/events", port: Int, contentType: String = "application/json", body: String = "") -> [UInt8] {
    var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
    if method == "POST" { head += "Content-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n" }
    return Array((head + "\r\n" + body).utf8)
}
