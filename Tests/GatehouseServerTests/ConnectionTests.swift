import Foundation
import GatehouseClient
import GatehouseCore
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP connection to the server, for requests no HTTP client would send: half-sent
/// heads, bodies cut short, chunked bodies over the limit.
final class RawConnection {
    let fd: Int32

    init(_ url: String) throws {
        let port = UInt16(url.split(separator: ":").last.flatMap { Int($0) } ?? 0)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else { throw POSIXError(.ECONNREFUSED) }
    }

    deinit { Glibc.close(fd) }

    func send(_ text: String) { send(Array(text.utf8)) }
    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the server closes the connection (true) or `seconds` pass without it (false).
    func readUntilClosed(seconds: Double) -> (bytes: [UInt8], closed: Bool) {
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while Date() < deadline {
            var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { received += buffer[..<n]; continue }
            if n == 0 { return (received, true) }
            if errno == ECONNRESET { return (received, true) }
        }
        return (received, false)
    }

    /// Reads one response's bytes: until `seconds` pass without the server closing.
    func read(for seconds: Double) -> [UInt8] { readUntilClosed(seconds: seconds).bytes }

    /// The status line of the next response, or nil if none came within `seconds`.
    func statusLine(within seconds: Double) -> String? {
        var received: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date() < deadline {
            if let end = received.firstIndex(of: UInt8(ascii: "\r")) { return String(decoding: received[..<end], as: UTF8.self) }
            var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let n = recv(fd, &buffer, buffer.count, 0)
            if n > 0 { received += buffer[..<n] } else if n == 0 { return nil }
        }
        return nil
    }
}

extension ServerProcess {
    /// Stops the server and returns what it logged on stderr.
    func stopAndReadLog() -> String {
        kill()
        return logged(finished: true)
    }
}

@Suite(.serialized)
struct ConnectionTests {
    func config(_ dir: TempDir, _ server: String) -> [String] {
        ["--config", dir.write("gatehouse.yml", "server:\n" + server)]
    }

    func chunked(_ body: [UInt8], chunk: Int = 1000) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < body.count {
            let piece = body[i..<min(body.count, i + chunk)]
            out += Array((String(piece.count, radix: 16) + "\r\n").utf8) + piece + Array("\r\n".utf8)
            i += chunk
        }
        return out + Array("0\r\n\r\n".utf8)
    }

    /// An event padded with spaces to exactly `size` bytes.
    func event(size: Int) -> [UInt8] {
        let json = Array(#"{"type":"run.started","pipeline":"p"}"#.utf8)
        return json + [UInt8](repeating: 0x20, count: size - json.count)
    }

    /// Issue 10, defect 5: a chunked body over `max_body` was a 500 (`NIOTooManyBytesError`,
    /// logged as an error). It is a 413 problem, logged at info, and the connection ends
    /// cleanly; the limit is `max_body` exactly, chunked or not.
    @Test func chunkedBodyOverTheLimitIs413AndClosesCleanly() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir, arguments: config(dir, "  max_body: 4096\n"), environment: ["GATEHOUSE_LOG_LEVEL": "info", "GATEHOUSE_LOG_FORMAT": "json"])
            let head = "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"

            let over = try RawConnection(server.url)
            over.send(head + "Transfer-Encoding: chunked\r\n\r\n")
            over.send(chunked(event(size: 8192)))
            let (answer, closed) = over.readUntilClosed(seconds: 30)
            let text = String(decoding: answer, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 413"), "\(text)")
            #expect(text.lowercased().contains("content-type: application/problem+json"))
            #expect(closed, "the connection stays open after a refused body")

            for (size, status) in [(4096, 202), (4097, 413)] {
                let exact = try RawConnection(server.url)
                exact.send(head + "Transfer-Encoding: chunked\r\n\r\n")
                exact.send(chunked(event(size: size), chunk: 512))
                exact.shutdownWrite()
                let reply = String(decoding: exact.read(for: 30), as: UTF8.self)
                #expect(reply.hasPrefix("HTTP/1.1 \(status)"), "chunked \(size) bytes: \(reply.prefix(80))")
                let declared = try server.post("/v1/events", String(decoding: event(size: size), as: UTF8.self))
                #expect(declared.status == status, "Content-Length \(size): \(declared.status)")
            }
            #expect(try server.allEvents().count == 2)

            let log = server.stopAndReadLog()
            #expect(!log.contains(#""level":"error""#), "\(log)")
            #expect(log.contains(#""status":413"#) || log.contains(#""status":"413""#), "\(log)")
        }
    }

    /// A body shorter than its Content-Length, then the client goes away: not a server error.
    @Test func aBodyCutShortIsNotAServerError() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir, environment: ["GATEHOUSE_LOG_LEVEL": "info", "GATEHOUSE_LOG_FORMAT": "json"])
            for path in ["/v1/events", "/v1/gates", "/v1/datasets"] {
                let cut = try RawConnection(server.url)
                cut.send("POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":")
                cut.shutdownWrite()
                let reply = String(decoding: cut.read(for: 30), as: UTF8.self)
                #expect(!reply.hasPrefix("HTTP/1.1 500"), "\(path): \(reply)")
            }
            // The NDJSON import reads its body as a stream: the same rule.
            #expect(try server.post("/v1/datasets", #"{"name":"d","labels":["a"]}"#).status == 201)
            let cut = try RawConnection(server.url)
            cut.send("POST /v1/datasets/d/items HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{\"id\":\"1\",\"data\":{\"text\":\"t\"}}\n")
            cut.shutdownWrite()
            let reply = String(decoding: cut.read(for: 30), as: UTF8.self)
            #expect(!reply.hasPrefix("HTTP/1.1 500"), "\(reply)")
            #expect(try server.json("/v1/datasets/d")["items"] == .int(0))
            let log = server.stopAndReadLog()
            #expect(!log.contains(#""level":"error""#), "\(log)")
        }
    }

    /// Issue 10, defect 6: a client that stops sending mid-head or mid-body, or keeps an idle
    /// connection, is closed after `server.idle_timeout`; an answer being waited for is not.
    @Test func slowAndIdleConnectionsAreClosed() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir, arguments: config(dir, "  idle_timeout: 1s\n"))
            let halfHead = try RawConnection(server.url)
            halfHead.send("POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
            let halfBody = try RawConnection(server.url)
            halfBody.send("POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{\"type\"")
            let silent = try RawConnection(server.url)
            let keptAlive = try RawConnection(server.url)
            keptAlive.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            // Each is closed by the server (the read ends), not left open until we give up.
            #expect(halfHead.readUntilClosed(seconds: 30).closed)
            #expect(halfBody.readUntilClosed(seconds: 30).closed)
            #expect(silent.readUntilClosed(seconds: 30).closed)
            let (answer, closed) = keptAlive.readUntilClosed(seconds: 30)
            #expect(String(decoding: answer, as: UTF8.self).hasPrefix("HTTP/1.1 200"))
            #expect(closed)

            // A gate wait longer than the idle timeout still gets its answer.
            let gate = try server.post("/v1/gates", #"{"title":"t","pipeline":"p"}"#).json
            let id = try #require(gate["id"]?.stringValue)
            let waited = try server.get("/v1/gates/\(id)/wait?timeout=3s")
            #expect(waited.status == 200 && waited.json["state"] == .string("pending"))
        }
    }

    /// `server.max_connections` caps open connections: one more waits until one closes.
    @Test func openConnectionsAreCapped() async throws {
        try await offThePool {
            let dir = TempDir()
            let server = try ServerProcess(dir: dir, arguments: config(dir, "  max_connections: 2\n"))
            func healthz(_ c: RawConnection) { c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") }
            func answered(_ c: RawConnection, within seconds: Double) -> Bool {
                c.statusLine(within: seconds)?.hasPrefix("HTTP/1.1 200") == true
            }
            var held = [try RawConnection(server.url), try RawConnection(server.url)]
            for c in held {
                healthz(c)
                #expect(answered(c, within: 30))
            }
            let third = try RawConnection(server.url)
            healthz(third)
            #expect(!answered(third, within: 1), "a third connection was served while two were open")
            held.removeFirst()  // closes it
            #expect(answered(third, within: 30))
            _ = held
        }
    }
}
