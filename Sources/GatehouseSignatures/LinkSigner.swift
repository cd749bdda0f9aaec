import Crypto
import Foundation
import GatehouseCore

/// Signs the links that open a gate's web decision page. A link names the gate, optionally
/// the person it was made for (then the page decides as them), and when it stops working:
/// `v1.<base64url(gate|by|expires)>.<base64url(HMAC-SHA256)>`. The key is made by the server
/// on first start and kept in its database, so links survive restarts.
public struct LinkSigner: Sendable {
    let key: SymmetricKey

    public init(key: [UInt8]) { self.key = SymmetricKey(data: key) }

    public struct Claims: Sendable, Equatable {
        public var gate: String
        public var by: String?
        public var expires: Timestamp

        public init(gate: String, by: String?, expires: Timestamp) {
            self.gate = gate
            self.by = by
            self.expires = expires
        }
    }

    public func token(gate: String, by: String?, expires: Timestamp) -> String {
        let payload = Array("\(gate)|\(by ?? "")|\(expires.milliseconds / 1000)".utf8)
        return "v1." + Self.base64url(payload) + "." + Self.base64url(mac([Array("link".utf8), payload]))
    }

    public func verify(_ token: String, now: Timestamp = .now()) -> Claims? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "v1", let payload = Self.unbase64url(String(parts[1])),
              let signature = Self.unbase64url(String(parts[2])) else { return nil }
        guard HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Array("link".utf8) + payload, using: key) else { return nil }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 3, let seconds = Int64(fields[2]), case let (ms, false) = seconds.multipliedReportingOverflow(by: 1000) else { return nil }
        let claims = Claims(gate: fields[0], by: fields[1].isEmpty ? nil : fields[1], expires: Timestamp(milliseconds: ms))
        return claims.expires > now ? claims : nil
    }

    /// The CSRF token the decision form carries: bound to the browser's random cookie and the
    /// gate, so another site can neither read nor forge it.
    public func csrf(cookie: String, gate: String) -> String {
        Self.base64url(mac([Array("csrf".utf8), Array(cookie.utf8), Array(gate.utf8)]))
    }

    public func checkCSRF(_ token: String, cookie: String, gate: String) -> Bool {
        guard let given = Self.unbase64url(token), !cookie.isEmpty else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(given, authenticating: Array("csrf".utf8) + Array(cookie.utf8) + Array(gate.utf8), using: key)
    }

    /// A browser session for the web pages: who signed in, with which token (nil: by name, on
    /// a server without tokens), until when. The token is named, not copied: the server looks
    /// it up on use, so its scopes apply and revoking it signs the person out.
    public struct Session: Sendable, Equatable {
        public var name: String
        public var tokenID: String?
        public var expires: Timestamp

        public init(name: String, tokenID: String?, expires: Timestamp) {
            self.name = name
            self.tokenID = tokenID
            self.expires = expires
        }
    }

    /// `s2.<base64url(name␟token␟expires)>.<base64url(HMAC-SHA256)>`; U+001F cannot occur in a
    /// name or a token id (identities refuse control characters).
    public func session(_ session: Session) -> String {
        let payload = Array("\(session.name)\u{1F}\(session.tokenID ?? "")\u{1F}\(session.expires.milliseconds / 1000)".utf8)
        return "s2." + Self.base64url(payload) + "." + Self.base64url(mac([Array("session".utf8), payload]))
    }

    /// The session a cookie holds, if it is signed by this server and not expired.
    public func verifySession(_ token: String, now: Timestamp = .now()) -> Session? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "s2", let payload = Self.unbase64url(String(parts[1])), let signature = Self.unbase64url(String(parts[2])),
              HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Array("session".utf8) + payload, using: key) else { return nil }
        let fields = String(decoding: payload, as: UTF8.self).split(separator: "\u{1F}", omittingEmptySubsequences: false).map(String.init)
        guard fields.count == 3, !fields[0].isEmpty, let seconds = Int64(fields[2]), case let (ms, false) = seconds.multipliedReportingOverflow(by: 1000) else { return nil }
        let session = Session(name: fields[0], tokenID: fields[1].isEmpty ? nil : fields[1], expires: Timestamp(milliseconds: ms))
        return session.expires > now ? session : nil
    }

    /// The secret a Mattermost button carries in its context for one gate and action: an HMAC,
    /// so nothing per gate needs storing and it is checked in constant time.
    public func contextToken(gate: String, action: String) -> String {
        mac([Array("mattermost".utf8), Array("\(gate)|\(action)".utf8)]).map { String(format: "%02x", $0) }.joined()
    }

    public func checkContextToken(_ token: String, gate: String, action: String) -> Bool {
        let given = [UInt8](hexString: token)
        guard given.count == 32 else { return false }
        var message = Array("mattermost".utf8)
        message += Array("\(gate)|\(action)".utf8)
        return HMAC<SHA256>.isValidAuthenticationCode(given, authenticating: message, using: key)
    }

    private func mac(_ parts: [[UInt8]]) -> [UInt8] {
        var message: [UInt8] = []
        for p in parts { message += p }
        return Array(HMAC<SHA256>.authenticationCode(for: message, using: key))
    }

    public static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    public static func unbase64url(_ text: String) -> [UInt8]? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s).map { Array($0) }
    }
}
