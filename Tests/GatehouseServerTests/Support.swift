import Foundation
import GatehouseClient
import GatehouseCore
import GatehousePostgres
import Testing

/// The built `gatehouse` binary, next to the test bundle in the build folder.
func gatehouseBinary() -> String {
    if let path = ProcessInfo.processInfo.environment["GATEHOUSE_BIN"] { return path }
    let exe = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
    return exe.deletingLastPathComponent().appendingPathComponent("gatehouse").path
}

/// A temp folder per test, removed at the end.
final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "gatehouse-test-" + UUID().uuidString.prefix(8)
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { path + "/" + name }
    func write(_ name: String, _ text: String) -> String {
        let p = file(name)
        FileManager.default.createFile(atPath: p, contents: Data(text.utf8))
        return p
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The database a test's server uses: a SQLite file in the test's folder, or — when
/// GATEHOUSE_TEST_POSTGRES names a PostgreSQL server (`make test` starts one) — a fresh
/// database of its own there. The same suite runs on both stores.
func testDatabase(_ dir: TempDir, name: String = "gatehouse.db") -> String {
    guard let admin = ProcessInfo.processInfo.environment["GATEHOUSE_TEST_POSTGRES"], !admin.isEmpty else { return dir.file(name) }
    return freshPostgresDatabase(admin: admin)
}

/// Whether this run is the PostgreSQL pass.
var testingPostgres: Bool { !(ProcessInfo.processInfo.environment["GATEHOUSE_TEST_POSTGRES"] ?? "").isEmpty }

func freshPostgresDatabase(admin: String) -> String {
    do { return try PostgresStore.freshDatabase(on: admin) } catch { fatalError("cannot create a test database on \(admin): \(error)") }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `gatehouse ARGS` to completion.
@discardableResult
func runCLI(_ arguments: [String], environment: [String: String] = [:], stdin: String? = nil, directory: String? = nil) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: gatehouseBinary())
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env["GATEHOUSE_URL"] = nil
    env["GATEHOUSE_TOKEN"] = nil
    for (k, v) in environment { env[k] = v }
    process.environment = env
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    // Read before waiting so a chatty child cannot block on a full pipe.
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

/// A real `gatehouse serve` child process on an ephemeral port with its own database.
final class ServerProcess {
    let process = Process()
    let dir: TempDir
    let db: String
    private(set) var url = ""
    let stderrPipe = Pipe()
    /// Where stderr goes instead of `stderrPipe` (GATEHOUSE_TEST_STDERR_DIR).
    private(set) var logFile: String?
    private let stdoutPipe = Pipe()

    init(dir: TempDir = TempDir(), db: String? = nil, arguments: [String] = [], environment: [String: String] = [:]) throws {
        self.dir = dir
        self.db = db ?? testDatabase(dir)
        process.executableURL = URL(fileURLWithPath: gatehouseBinary())
        process.arguments = ["serve", "--address", "127.0.0.1:0", "--db", self.db] + arguments
        var env = ProcessInfo.processInfo.environment
        env["GATEHOUSE_LOG_LEVEL"] = env["GATEHOUSE_TEST_LOG_LEVEL"] ?? "warning"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.currentDirectoryURL = URL(fileURLWithPath: dir.path)
        process.standardOutput = stdoutPipe
        // GATEHOUSE_TEST_STDERR_DIR keeps each server's log in a file there (debugging).
        if let logs = ProcessInfo.processInfo.environment["GATEHOUSE_TEST_STDERR_DIR"] {
            let path = logs + "/server-\(UUID().uuidString.prefix(8)).log"
            FileManager.default.createFile(atPath: path, contents: nil)
            process.standardError = FileHandle(forWritingAtPath: path)
            logFile = path
        } else {
            process.standardError = stderrPipe
        }
        try process.run()
        // The first stdout line names the bound address.
        var buffer = Data()
        let handle = stdoutPipe.fileHandleForReading
        let deadline = Date().addingTimeInterval(30)
        while !buffer.contains(UInt8(ascii: "\n")) && Date() < deadline {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
        }
        let line = String(decoding: buffer, as: UTF8.self)
        guard let range = line.range(of: "http://") else {
            process.terminate()
            throw ServerStartFailure(output: line + logged(finished: false))
        }
        url = String(line[range.lowerBound...].prefix(while: { !$0.isWhitespace }))
    }

    struct ServerStartFailure: Error, CustomStringConvertible {
        var output: String
        var description: String { "server did not start: \(output)" }
    }

    var pid: Int32 { process.processIdentifier }

    /// What the server wrote on stderr: all of it once it has `finished`, else what is there.
    /// From the log file when GATEHOUSE_TEST_STDERR_DIR sends it there — reading the unused
    /// pipe would wait for ever.
    func logged(finished: Bool) -> String {
        if let logFile { return (try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "" }
        let handle = stderrPipe.fileHandleForReading
        return String(decoding: finished ? handle.readDataToEndOfFile() : handle.availableData, as: UTF8.self)
    }

    /// SIGKILL: the crash case (and the only signal a child of `swift test` reliably gets).
    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func signal(_ sig: Int32) { Foundation.kill(process.processIdentifier, sig) }

    func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit { kill() }

    // MARK: HTTP helpers

    func request(_ method: String, _ path: String, body: String? = nil, contentType: String? = "application/json", headers: [String: String] = [:], token: String? = nil) throws -> HTTPResult {
        var h = headers
        if let contentType, body != nil { h["Content-Type"] = contentType }
        if let token { h["Authorization"] = "Bearer \(token)" }
        return try HTTPClient().send(method: method, url: url + path, headers: h, body: body.map { Array($0.utf8) })
    }

    func post(_ path: String, _ body: String, contentType: String = "application/json", headers: [String: String] = [:], token: String? = nil) throws -> HTTPResult {
        try request("POST", path, body: body, contentType: contentType, headers: headers, token: token)
    }

    func get(_ path: String, token: String? = nil) throws -> HTTPResult {
        try request("GET", path, token: token)
    }

    func json(_ path: String, token: String? = nil) throws -> JSONObject {
        let result = try get(path, token: token)
        #expect(result.status == 200, "GET \(path) → \(result.status) \(result.text)")
        return try JSONValue.parse(bytes: result.body).objectValue ?? JSONObject()
    }

    func allEvents(_ query: String = "") throws -> [JSONObject] {
        var events: [JSONObject] = []
        var after = "0"
        while true {
            let page = try json("/v1/events?limit=1000&after=\(after)" + (query.isEmpty ? "" : "&" + query))
            let batch = page["events"]?.arrayValue?.compactMap(\.objectValue) ?? []
            events += batch
            guard case .string(let next)? = page["next"] else { break }
            after = next
        }
        return events
    }
}

extension HTTPResult {
    var json: JSONObject { (try? JSONValue.parse(bytes: body))?.objectValue ?? JSONObject() }
}

/// The Python HTTP sink (Fixtures/sink.py) standing in for chat platforms and webhooks.
final class Sink {
    let process = Process()
    private(set) var port = 0
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/sink.py").path

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-u", Self.script]
        let line = try firstLine(of: process)
        guard line.hasPrefix("PORT "), let p = Int(line.dropFirst(5)) else { throw ServerProcess.ServerStartFailure(output: "sink: \(line)") }
        port = p
    }

    func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    struct Received {
        var path: String
        var method = "POST"
        var time: Double
        var headers: [String: String]
        var body: String
        var json: JSONObject { (try? JSONValue.parse(body))?.objectValue ?? JSONObject() }
    }

    func received(_ prefix: String = "/") throws -> [Received] {
        let r = try HTTPClient().send(method: "GET", url: url("/_requests"))
        let list = (try JSONValue.parse(bytes: r.body)).arrayValue ?? []
        return list.compactMap { $0.objectValue }.map { o in
            var headers: [String: String] = [:]
            for (k, v) in o["headers"]?.objectValue ?? JSONObject() { headers[k] = v.stringValue }
            return Received(path: o["path"]?.stringValue ?? "", method: o["method"]?.stringValue ?? "POST", time: o["time"]?.doubleValue ?? 0, headers: headers, body: o["body"]?.stringValue ?? "")
        }.filter { $0.path.hasPrefix(prefix) }
    }

    /// Waits until `count` requests whose path starts with `prefix` arrived.
    @discardableResult
    func wait(for count: Int, at prefix: String, timeout: TimeInterval = 15) throws -> [Received] {
        let deadline = Date().addingTimeInterval(timeout)
        var got: [Received] = []
        while Date() < deadline {
            got = try received(prefix)
            if got.count >= count { return got }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return got
    }

    /// Waits until a request at `prefix` satisfies `condition`.
    func waitFor(at prefix: String, timeout: TimeInterval = 15, _ condition: (Received) -> Bool) throws -> Received? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let found = try received(prefix).first(where: condition) { return found }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return nil
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// The repository's templates/ folder, for servers that deliver.
let templatesFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("templates").path

/// A server with a config that delivers to a fresh sink; `yaml` names the sink's URLs.
func deliveringServer(_ yaml: (Sink) -> String) throws -> (Sink, ServerProcess) {
    let sink = try Sink()
    let dir = TempDir()
    let config = dir.write("gatehouse.yml", yaml(sink))
    let server = try ServerProcess(dir: dir, arguments: ["--config", config], environment: ["GATEHOUSE_TEMPLATES": templatesFolder])
    return (sink, server)
}

extension ServerProcess {
    /// Polls the deliveries API until `condition` holds (the dispatcher works asynchronously).
    func waitForDeliveries(timeout: TimeInterval = 15, _ condition: ([JSONObject]) -> Bool) throws -> [JSONObject] {
        let deadline = Date().addingTimeInterval(timeout)
        var rows: [JSONObject] = []
        while Date() < deadline {
            rows = try json("/v1/deliveries?limit=1000")["deliveries"]?.arrayValue?.compactMap(\.objectValue) ?? []
            if condition(rows) { return rows }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return rows
    }
}

/// One HTTP/1.1 connection on a plain socket, for what clients built on libcurl hide:
/// several requests on one keep-alive connection, pipelining, exactly which bytes came back.
final class RawHTTPConnection {
    let fd: Int32
    private var buffer: [UInt8] = []

    struct Answer {
        var status: Int
        var headers: [String: String]  // names lowercased
        var body: String
    }

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw ServerProcess.ServerStartFailure(output: "connect: errno \(errno)") }
    }

    deinit { close(fd) }

    func send(_ text: String) {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + sent, bytes.count - sent) }
            if n <= 0 { return }
            sent += n
        }
    }

    func get(_ path: String, headers: String = "") { send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(headers)\r\n") }

    /// The next whole answer, or nil if none arrives within `timeout` seconds (or the server
    /// closed the connection first). `bodyless`: the answer to a HEAD (a head only, whatever
    /// its Content-Length says).
    func read(timeout: TimeInterval, bodyless: Bool = false) -> Answer? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if let answer = takeAnswer(bodyless: bodyless) { return answer }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, Int32(left * 1000) + 1) > 0 else { return nil }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            guard n > 0 else { return nil }
            buffer += chunk.prefix(n)
        }
    }

    /// Whether the server has closed the connection (within `timeout`), with nothing unread.
    func closedByServer(timeout: TimeInterval) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) > 0 else { return false }
        var byte: UInt8 = 0
        return Glibc.read(fd, &byte, 1) == 0
    }

    private func takeAnswer(bodyless: Bool) -> Answer? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard buffer.count >= 4, let end = (0...(buffer.count - 4)).first(where: { buffer[$0..<($0 + 4)].elementsEqual(separator) }) else { return nil }
        let lines = String(decoding: buffer[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let status = lines[0].split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = bodyless ? 0 : Int(headers["content-length"] ?? "0") ?? 0
        guard buffer.count >= end + 4 + length else { return nil }
        let body = String(decoding: buffer[(end + 4)..<(end + 4 + length)], as: UTF8.self)
        buffer.removeFirst(end + 4 + length)
        return Answer(status: status, headers: headers, body: body)
    }
}

extension ServerProcess {
    var port: Int { Int(url.split(separator: ":").last ?? "0") ?? 0 }
}

/// Runs a test body that blocks (it starts processes, waits on them and polls with sleeps) on a
/// thread outside Swift's cooperative pool, at most six at a time. Off the pool, they do not
/// starve the in-process servers (`InProcessServer`) whose requests need its threads. Six because
/// these bodies mostly wait (on a child server, a sink, a back-off): with two at a time the
/// machine sat two-thirds idle and the suite took 79 s; with six it takes ~30 s on two cores and
/// still leaves CPU to spare. The body stays in the test's task (a task-executor preference), so
/// `#expect` is still attributed to its test.
func offThePool<T: Sendable>(_ body: @Sendable () throws -> T) async throws -> T {
    try await withTaskExecutorPreference(BlockingTests.executor) {
        BlockingTests.slots.wait()
        defer { BlockingTests.slots.signal() }
        return try body()
    }
}

enum BlockingTests {
    static let slots = DispatchSemaphore(value: 6)
    static let executor = ThreadsExecutor()

    /// Runs jobs on dispatch's global concurrent threads, which may block without holding up
    /// the cooperative pool.
    final class ThreadsExecutor: TaskExecutor {
        func enqueue(_ job: consuming ExecutorJob) {
            let job = UnownedJob(job)
            let executor = asUnownedTaskExecutor()
            DispatchQueue.global().async { job.runSynchronously(on: executor) }
        }
    }
}

/// Starts `process` and returns the first line it prints (helpers print where they listen).
func firstLine(of process: Process) throws -> String {
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    var buffer = Data()
    while !buffer.contains(UInt8(ascii: "\n")) {
        let chunk = out.fileHandleForReading.availableData
        if chunk.isEmpty { break }
        buffer.append(chunk)
    }
    return String(decoding: buffer, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// `count` CJK ideographs (3 bytes each) in an order PostgreSQL cannot compress (a repeated
/// character it compresses to a few bytes, and long keys then pass its index's size limit
/// unnoticed). Deterministic.
func incompressibleText(_ count: Int, seed: UInt64 = 1) -> String {
    var state = seed
    var out = String.UnicodeScalarView()
    for _ in 0..<count {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        out.append(Unicode.Scalar(0x4E00 + UInt32(truncatingIfNeeded: state >> 33) % 0x5000)!)
    }
    return String(out)
}
