import Crypto
import Foundation
import GatehouseCore

/// Slack's request signing (docs/platforms/slack.md): `v0=` + hex HMAC-SHA256 over
/// `v0:<timestamp>:<raw body>` with the app's signing secret, within 300 s of now.
public struct SlackSignature: Sendable {
    public let secret: String
    public static let window: Int64 = 300

    public init(secret: String) { self.secret = secret }

    public func signature(timestamp: String, body: [UInt8]) -> String {
        let message = Array("v0:\(timestamp):".utf8) + body
        let mac = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Array(secret.utf8)))
        return "v0=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    public enum Verdict: Equatable { case valid, missing, stale, badSignature }

    public func verify(timestamp: String?, signature: String?, body: [UInt8], now: Int64) -> Verdict {
        guard let timestamp, let signature, let seconds = Int64(timestamp) else { return .missing }
        // Exactly 300 s old is still accepted, as slack_sdk does.
        guard abs(now - seconds) <= Self.window else { return .stale }
        return constantTimeEqual(Array(self.signature(timestamp: timestamp, body: body).utf8), Array(signature.utf8)) ? .valid : .badSignature
    }
}

/// Discord's interaction signing (docs/platforms/discord.md): Ed25519 over the timestamp bytes
/// followed by the raw body, with the application's public key.
public struct DiscordSignature: Sendable {
    let key: Curve25519.Signing.PublicKey
    /// Discord documents no freshness window; we refuse a timestamp more than 5 minutes off so
    /// a captured request cannot be replayed later (replays inside it are caught by id).
    public static let window: Int64 = 300

    public init?(publicKeyHex: String) {
        let bytes = [UInt8](hexString: publicKeyHex)
        guard bytes.count == 32, let key = try? Curve25519.Signing.PublicKey(rawRepresentation: bytes) else { return nil }
        self.key = key
    }

    public func isValid(timestamp: String, signatureHex: String, body: [UInt8]) -> Bool {
        let signature = [UInt8](hexString: signatureHex)
        guard signature.count == 64 else { return false }
        return key.isValidSignature(signature, for: Array(timestamp.utf8) + body)
    }
}

/// Compares without an early exit, so timing reveals nothing about where a forgery differs.
public func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
}
