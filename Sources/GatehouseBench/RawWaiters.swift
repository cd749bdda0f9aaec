import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Many HTTP/1.1 requests left waiting on their own connections, read back with one epoll
/// loop on plain sockets — a client that costs the machine as little as a client can, so a
/// wake-up figure measures the server and the kernel, not the measuring side. It speaks only
/// what the benchmark needs: one request per connection, answers with Content-Length.
final class RawWaiters: @unchecked Sendable {
    private(set) var sockets: [Int32] = []

    /// Connects `count` sockets to 127.0.0.1:`port` and sends `request` on each.
    init(port: Int, count: Int, request: [UInt8]) throws {
        for _ in 0..<count {
            let fd = try Self.connect(port: port)
            sockets.append(fd)
            var sent = 0
            while sent < request.count {
                let n = request.withUnsafeBytes { write(fd, $0.baseAddress! + sent, request.count - sent) }
                guard n > 0 else { throw BenchFailure("could not send a wait request: errno \(errno)") }
                sent += n
            }
        }
    }

    deinit { closeAll() }

    func closeAll() {
        for fd in sockets { close(fd) }
        sockets = []
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchFailure("socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else {
            close(fd)
            throw BenchFailure("connect to port \(port): errno \(errno)")
        }
        return fd
    }

    /// One waiter's answer: when its last byte arrived, and what it said.
    struct Answer {
        var arrived: UInt64
        var status: Int
        var body: String
    }

    /// Reads every socket until each has a whole answer (or `timeout` seconds pass), on the
    /// calling thread. Answers come back in arrival order.
    func collect(timeout: Double) -> [Answer] {
        let poller = Epoll()
        defer { poller.close() }
        for (index, fd) in sockets.enumerated() { poller.add(fd, tag: UInt64(index)) }
        // While answers arrive, only what tells an answer is whole is worked out (the end of
        // its head, its Content-Length); the rest waits until all are in, so the reading side
        // stays as fast as it can be.
        var buffers = [[UInt8]](repeating: [], count: sockets.count)
        var expected = [Int?](repeating: nil, count: sockets.count)
        var arrivals: [(index: Int, time: UInt64)] = []
        arrivals.reserveCapacity(sockets.count)
        var chunk = [UInt8](repeating: 0, count: 16_384)
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(timeout * 1e9)
        while arrivals.count < sockets.count, DispatchTime.now().uptimeNanoseconds < deadline {
            for tag in poller.wait(milliseconds: 100) {
                let index = Int(tag)
                let fd = sockets[index]
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n <= 0 {
                    // Closed or failed before answering: it counts as missing.
                    poller.remove(fd)
                    continue
                }
                let now = DispatchTime.now().uptimeNanoseconds
                buffers[index].append(contentsOf: chunk[..<n])
                if expected[index] == nil { expected[index] = Self.wholeLength(buffers[index]) }
                if let total = expected[index], buffers[index].count >= total {
                    arrivals.append((index, now))
                    poller.remove(fd)
                }
            }
        }
        return arrivals.map { Self.answer(buffers[$0.index], at: $0.time) }
    }

    /// The length of the whole answer once its head is in (head, blank line, Content-Length
    /// bytes of body); nil before that.
    static func wholeLength(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var end = -1
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            end = i
            break
        }
        guard end >= 0 else { return nil }
        return end + 4 + contentLength(bytes[..<end])
    }

    static func contentLength(_ head: ArraySlice<UInt8>) -> Int {
        let name = Array("content-length:".utf8)
        var i = head.startIndex
        while i + name.count <= head.endIndex {
            var matches = true
            for (k, c) in name.enumerated() where (head[i + k] | 0x20) != c && !(c == UInt8(ascii: ":") && head[i + k] == c) {
                matches = false
                break
            }
            if matches {
                var j = i + name.count
                var value = 0
                while j < head.endIndex, head[j] == 32 { j += 1 }
                while j < head.endIndex, head[j] >= 48, head[j] <= 57 {
                    value = value * 10 + Int(head[j] - 48)
                    j += 1
                }
                return value
            }
            i += 1
        }
        return 0
    }

    /// A whole answer, parsed.
    static func answer(_ bytes: [UInt8], at time: UInt64) -> Answer {
        let length = wholeLength(bytes) ?? bytes.count
        let text = String(decoding: bytes[..<min(length, bytes.count)], as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        let status = parts[0].split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return Answer(arrived: time, status: status, body: parts.dropFirst().joined(separator: "\r\n\r\n"))
    }
}

/// epoll(7), which Glibc's Swift module leaves out; declared here by hand. poll(2) over a
/// thousand sockets would cost the client more than the server it measures.
@_silgen_name("epoll_create1") private func epoll_create1(_ flags: Int32) -> Int32
@_silgen_name("epoll_ctl") private func epoll_ctl(_ epfd: Int32, _ op: Int32, _ fd: Int32, _ event: UnsafeMutableRawPointer?) -> Int32
@_silgen_name("epoll_wait") private func epoll_wait(_ epfd: Int32, _ events: UnsafeMutableRawPointer, _ maxEvents: Int32, _ timeout: Int32) -> Int32

final class Epoll {
    private let fd = epoll_create1(0)
    // struct epoll_event is packed on x86-64 (12 bytes), naturally aligned elsewhere (16).
    #if arch(x86_64)
    private static let eventSize = 12, dataOffset = 4
    #else
    private static let eventSize = 16, dataOffset = 8
    #endif
    private static let readable: UInt32 = 0x001  // EPOLLIN
    private var events = [UInt8](repeating: 0, count: 256 * Epoll.eventSize)

    func add(_ socket: Int32, tag: UInt64) {
        var event = [UInt8](repeating: 0, count: Self.eventSize)
        event.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: Self.readable, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: tag, toByteOffset: Self.dataOffset, as: UInt64.self)
            _ = epoll_ctl(fd, 1 /* EPOLL_CTL_ADD */, socket, raw.baseAddress)
        }
    }

    func remove(_ socket: Int32) { _ = epoll_ctl(fd, 2 /* EPOLL_CTL_DEL */, socket, nil) }

    /// The tags of the sockets ready to read.
    func wait(milliseconds: Int32) -> [UInt64] {
        events.withUnsafeMutableBytes { raw in
            let n = epoll_wait(fd, raw.baseAddress!, Int32(raw.count / Self.eventSize), milliseconds)
            guard n > 0 else { return [] }
            return (0..<Int(n)).map { raw.loadUnaligned(fromByteOffset: $0 * Self.eventSize + Self.dataOffset, as: UInt64.self) }
        }
    }

    func close() { _ = Glibc.close(fd) }
}

/// The machine's own floor for the same job: a listener in this process holding `count`
/// connections answers each with `answer` in one tight loop of write calls — no HTTP server,
/// no runtime, nothing but the kernel's loopback TCP. Returns the times after the first write
/// at which the waiters (a `RawWaiters`) had their answers.
enum LoopbackFloor {
    static func measure(count: Int, answer: [UInt8]) throws -> [Double] {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(listener, pointer, length)
                listen(listener, 4096)
                return getsockname(listener, pointer, &length)
            }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        // Accept on a thread while the waiters connect (the backlog would not hold them all).
        let accepted = AcceptedSockets()
        let acceptor = Thread {
            for _ in 0..<count {
                let fd = accept(listener, nil, nil)
                guard fd >= 0 else { break }
                var one: Int32 = 1
                setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                accepted.append(fd)
            }
            accepted.finish()
        }
        acceptor.start()
        let waiters = try RawWaiters(port: port, count: count, request: Array("GET / HTTP/1.1\r\nHost: floor\r\n\r\n".utf8))
        let servers = accepted.wait()
        defer { for fd in servers { close(fd) } }
        // The requests are in the servers' receive buffers; like a waiting server, leave them.
        let collecting = Collecting(waiters)
        Thread.sleep(forTimeInterval: 0.2)
        let start = DispatchTime.now().uptimeNanoseconds
        for fd in servers {
            _ = answer.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
        }
        let answers = collecting.wait()
        guard answers.count == count else { throw BenchFailure("floor: only \(answers.count) of \(count) answers") }
        return answers.map { Double($0.arrived &- start) / 1e6 }
    }
}

/// `RawWaiters.collect` running on its own thread, started now.
final class Collecting: @unchecked Sendable {
    private var answers: [RawWaiters.Answer] = []
    private let done = DispatchSemaphore(value: 0)
    init(_ waiters: RawWaiters, timeout: Double = 30) {
        Thread { [self] in
            answers = waiters.collect(timeout: timeout)
            done.signal()
        }.start()
    }
    func wait() -> [RawWaiters.Answer] {
        done.wait()
        return answers
    }
}

private final class AcceptedSockets: @unchecked Sendable {
    private let lock = NSCondition()
    private var sockets: [Int32] = []
    private var done = false
    func append(_ fd: Int32) { lock.withLock { sockets.append(fd) } }
    func finish() { lock.withLock { done = true; lock.broadcast() } }
    func wait() -> [Int32] {
        lock.withLock {
            while !done { lock.wait() }
            return sockets
        }
    }
}
