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
        guard fields.count == 3, let seconds = Int64(fields[2]) else { return nil }
        let claims = Claims(gate: fields[0], by: fields[1].isEmpty ? nil : fields[1], expires: Timestamp(milliseconds: seconds * 1000))
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

    /// A browser session for the labelling pages and the inbox: the person's name, signed.
    public func session(name: String) -> String {
        let payload = Array(name.utf8)
        return Self.base64url(payload) + "." + Self.base64url(mac([Array("session".utf8), payload]))
    }

    public func verifySession(_ token: String) -> String? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let payload = Self.unbase64url(String(parts[0])), let signature = Self.unbase64url(String(parts[1])),
              HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: Array("session".utf8) + payload, using: key) else { return nil }
        return String(decoding: payload, as: UTF8.self)
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
