import CFuzzDriver
import GatehouseCore
import GatehouseSignatures

/// The checks that decide whether a button click or a link may decide a gate: Slack's v0
/// HMAC, Discord's Ed25519, signed page links, CSRF tokens, sessions and Mattermost context
/// tokens. Whatever the input, nothing crashes and nothing forged verifies; what we sign
/// verifies, and one changed byte does not.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCallbacks(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: start, count: count))
    // Three fields separated by newlines: a timestamp, a signature (or token), a body.
    let parts = bytes.split(separator: UInt8(ascii: "\n"), maxSplits: 2, omittingEmptySubsequences: false).map(Array.init)
    let timestamp = String(decoding: parts.first ?? [], as: UTF8.self)
    let signature = String(decoding: parts.count > 1 ? parts[1] : [], as: UTF8.self)
    let body = parts.count > 2 ? parts[2] : []
    let now: Int64 = 1_795_946_400

    // Slack: a forged signature never passes; ours passes within the window, and fails with
    // any byte of the body changed.
    let slack = SlackSignature(secret: "8f742231b10e8888abcd99yyyzzz85a5")
    if slack.verify(timestamp: timestamp, signature: signature, body: body, now: now) == .valid,
       signature.lowercased() != slack.signature(timestamp: timestamp, body: body) {
        fatalError("a forged Slack signature verified: \(signature)")
    }
    let genuine = slack.signature(timestamp: String(now), body: body)
    guard slack.verify(timestamp: String(now), signature: genuine, body: body, now: now) == .valid else { fatalError("our own Slack signature failed") }
    if !body.isEmpty {
        var tampered = body
        tampered[tampered.count / 2] ^= 0x01
        guard slack.verify(timestamp: String(now), signature: genuine, body: tampered, now: now) == .badSignature else {
            fatalError("a tampered Slack body verified")
        }
    }

    // Discord: any public key text parses or is refused without crashing; with the real key,
    // fuzzed signatures never verify.
    _ = DiscordSignature(publicKeyHex: signature)
    let discord = DiscordSignature(publicKeyHex: "e1c5a2b3d4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff")
    if let discord, discord.isValid(timestamp: timestamp, signatureHex: signature, body: body) {
        fatalError("a forged Discord signature verified")
    }

    // Links, CSRF, sessions, context tokens: forgeries fail; our tokens round-trip.
    let signer = LinkSigner(key: Array("a key of thirty-two bytes, fixed".utf8))
    if signer.verify(signature, now: Timestamp(milliseconds: now * 1000)) != nil, !signature.hasPrefix("v1.") {
        fatalError("a link without our prefix verified")
    }
    _ = signer.verifySession(signature)
    _ = signer.checkCSRF(signature, cookie: timestamp, gate: "gate_1")
    _ = signer.checkContextToken(signature, gate: "gate_1", action: timestamp)
    let gate = timestamp.replacingOccurrences(of: "|", with: "")
    let by = signature.replacingOccurrences(of: "|", with: "")
    let expires = Timestamp(milliseconds: (now + 3600) * 1000)
    let link = signer.token(gate: gate, by: by.isEmpty ? nil : by, expires: expires)
    guard let claims = signer.verify(link, now: Timestamp(milliseconds: now * 1000)),
          claims.gate == gate, claims.by == (by.isEmpty ? nil : by) else { fatalError("our own link did not verify: \(link)") }
    if signer.verify(link, now: Timestamp(milliseconds: (now + 7200) * 1000)) != nil { fatalError("an expired link verified") }
    let context = signer.contextToken(gate: gate, action: by)
    guard signer.checkContextToken(context, gate: gate, action: by) else { fatalError("our own context token failed") }
    if signer.checkContextToken(context, gate: gate + "x", action: by) { fatalError("a context token verified for another gate") }
    return 0
}

/// SwiftPM links every executable with `main` = `<module>_main`, which shadows libFuzzer's own
/// main; this is that function, and it hands over to libFuzzer's driver.
@_cdecl("fuzz_callbacks_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { fuzzCallbacks($0, $1) }
}
