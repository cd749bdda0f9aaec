import GatehouseCore
import Testing

struct ControlCharactersTests {
    /// The byte scans agree with the scalar rules for every scalar of the Basic Multilingual
    /// Plane and some beyond, alone and after text whose last bytes could be taken for a
    /// lead-in (`é` ends in C3 A9, `€` is E2 82 AC, `…` is E2 80 A6, `‧` E2 80 A7).
    @Test func theByteScansAgreeWithTheScalarRules() {
        var disagreements: [String] = []
        for value in Array(0...0xFFFF) + [0x1F642, 0x10FFFF] {
            guard let scalar = Unicode.Scalar(value) else { continue }
            for prefix in ["", "a", "é", "€", "…", "\u{2027}"] {
                let text = prefix + String(Character(scalar)) + "z"
                if ControlCharacters.contains(text) != ControlCharacters.isControl(scalar)
                    || ControlCharacters.Deceptive.contains(text) != ControlCharacters.Deceptive.isDeceptive(scalar) {
                    disagreements.append(String(value, radix: 16) + " after \"" + prefix + "\"")
                }
            }
        }
        #expect(disagreements.isEmpty, "\(disagreements.prefix(10))")
        #expect(ControlCharacters.removing(from: "deploy-\u{202E}gnp\u{85}.exe\u{0}") == "deploy-gnp.exe")
    }

    /// New identifiers refuse both kinds; the rule stored records are read back with refuses
    /// only the C0 controls, so a gate or dataset an older server accepted still loads.
    @Test func newIdentifiersRefuseMoreThanStoredOnesAreReadWith() {
        for text in ["a\u{0}", "a\u{7F}", "a\u{85}", "a\u{2028}b", "deploy-\u{202E}gnp", "r\u{2066}x"] {
            #expect(ControlCharacters.newIdentifierError("f", text) != nil, "\(text.unicodeScalars.map(\.value))")
        }
        for text in ["a\u{85}", "a\u{2028}b", "deploy-\u{202E}gnp"] {
            #expect(ControlCharacters.fieldError("f", text) == nil && !ControlCharacters.contains(text))
        }
        #expect(ControlCharacters.newIdentifierError("f", "café ☕ 🙂") == nil)
    }

    /// Hex is hex digits: `UInt8(_:radix:)` also took a sign ("+f", "-0"), so one Slack
    /// signature had several spellings, each a replay its nonce did not know.
    @Test func hexIsDigitsOnly() {
        #expect([UInt8](hexString: "0aFf10") == [0x0A, 0xFF, 0x10])
        #expect([UInt8](hexString: "+f").isEmpty && [UInt8](hexString: "-0").isEmpty && [UInt8](hexString: "0a+f").count == 1)
        #expect([UInt8](hexString: "0A0b").hexString == "0a0b")
    }
}
