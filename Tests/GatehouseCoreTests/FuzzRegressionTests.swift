import Foundation
import GatehouseCore
import Testing

/// Every committed input of the libFuzzer targets (Fuzz/seeds/<target>/: the seeds and each
/// input a fuzzer ever crashed on, named crash-*) goes through the same properties the
/// targets check, so a fixed crash stays fixed in the normal test suite.
@Suite struct FuzzRegressionTests {
    static let seeds = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/seeds").path

    static func inputs(_ target: String) -> [(String, [UInt8])] {
        let folder = seeds + "/" + target
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.sorted().compactMap { name in
            FileManager.default.contents(atPath: folder + "/" + name).map { (name, Array($0)) }
        }
    }

    @Test func jsonRoundTrips() throws {
        let inputs = Self.inputs("fuzz-json")
        #expect(!inputs.isEmpty)
        for (name, bytes) in inputs {
            guard let value = try? JSONValue.parse(bytes: bytes) else { continue }
            let text = value.serialized()
            let again = try JSONValue.parse(text)
            #expect(again == value, "\(name)")
            #expect(again.serialized() == text, "\(name)")
        }
    }

    @Test func intakeAcceptsOnlyValidEvents() {
        let inputs = Self.inputs("fuzz-intake")
        #expect(!inputs.isEmpty)
        let modes: [EventIntake.MediaType] = [.json, .ndjson, .cloudEvent, .cloudEventBatch, .cloudEventBinary]
        let headers: (String) -> String? = { ["ce-specversion": "1.0", "ce-id": "fuzz-1", "ce-source": "/pipelines/train", "ce-type": "run.failed", "ce-subject": "r1"][$0] }
        var accepted = 0
        for (name, bytes) in inputs where !bytes.isEmpty {
            let result = EventIntake(maxItems: 50).events(from: Array(bytes.dropFirst()), mediaType: modes[Int(bytes[0]) % modes.count], headers: headers)
            if case .success(let events) = result {
                accepted += 1
                #expect(!events.isEmpty && events.count <= 50, "\(name)")
                #expect(events.allSatisfy { !$0.type.isEmpty && !$0.pipeline.isEmpty }, "\(name)")
            }
        }
        #expect(accepted >= 5, "the seeds are valid events in every format")
    }

    @Test func policiesParseBackTheSame() throws {
        let inputs = Self.inputs("fuzz-policy")
        #expect(!inputs.isEmpty)
        let context = JSONObject([("attributes", .object(JSONObject([("auc", .number("0.93")), ("n", .int(7))])))])
        for (name, bytes) in inputs {
            guard let expression = try? PolicyExpression(String(decoding: bytes, as: UTF8.self)) else { continue }
            let again = try PolicyExpression(expression.description)
            #expect(again == expression, "\(name)")
            #expect(again.evaluate(context) == expression.evaluate(context), "\(name)")
        }
    }

    @Test func markdownMakesOnlyItsOwnWellNestedTags() {
        let inputs = Self.inputs("fuzz-markdown")
        #expect(!inputs.isEmpty)
        for (name, bytes) in inputs {
            let html = Markdown.html(String(decoding: bytes, as: UTF8.self))
            #expect(MarkdownCheck.problem(in: html) == nil, "\(name): \(html)")
        }
    }

    @Test func itemsParseWithoutCrashing() {
        let inputs = Self.inputs("fuzz-items")
        #expect(!inputs.isEmpty)
        let specs: [DatasetSpec] = [
            DatasetSpec(name: "c", task: .classification, labels: ["pos", "neg", "neutral"]),
            DatasetSpec(name: "m", task: .multilabel, labels: ["a", "b", "c"]),
            DatasetSpec(name: "s", task: .spans, labels: ["PER", "ORG"]),
        ]
        var accepted = 0
        for (name, bytes) in inputs where !bytes.isEmpty {
            let spec = specs[Int(bytes[0]) % specs.count]
            for line in bytes.dropFirst().split(separator: 0x0A, omittingEmptySubsequences: false) {
                guard let value = try? JSONValue.parse(bytes: line) else { continue }
                if case .success(let item) = DatasetItem.parse(value, for: spec) {
                    accepted += 1
                    #expect(!item.id.isEmpty, "\(name)")
                    if let label = value.objectValue?["prediction"] { _ = spec.normalize(label, text: item.data["text"]?.stringValue) }
                }
            }
        }
        #expect(accepted >= 3)
    }

    @Test func matchersParseBackFromTheirDescription() throws {
        let inputs = Self.inputs("fuzz-routing")
        #expect(!inputs.isEmpty)
        var parsed = 0
        for (name, bytes) in inputs {
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                guard let matchers = try? Matcher.parseList(String(line.drop { $0 == " " })) else { continue }
                parsed += matchers.count
                for m in matchers { #expect(try Matcher.parse(m.description) == m, "\(name): \(m)") }
            }
        }
        #expect(parsed >= 5)
    }

    /// Found by fuzz-routing: a value with a control character printed (JSON escapes) and
    /// parsed back (only \n \t \" \\ understood) came back different — and silences are
    /// stored as their matchers' descriptions, so a silence changed across a restart.
    @Test func matcherValuesWithControlCharactersAndCombiningMarksRoundTrip() throws {
        for value in ["runy\u{0}\u{0}\u{0}.failed|step.failed", "a\rb\u{8}\u{C}\u{1F}", "\\\u{301}", "\"\u{301}", "😀 \\u0041 \\q"] {
            let m = try Matcher(name: "type", op: .regexMatch, value: value)
            let again = try Matcher.parse(m.description)
            #expect(again.value == value, "\(m.description)")
        }
        #expect(try Matcher.parse(#"run="a\u0041\ud83d\ude00\/""#).value == "aA😀/")
        #expect(try Matcher.parse(#"run="\q\u12""#).value == #"\q\u12"#)
    }

    /// Found by fuzz-markdown: escaping went by Character, and `"` or `<` followed by a
    /// combining mark is one Character equal to neither, so it passed unescaped.
    @Test func escapingIsByScalar() {
        #expect(Markdown.escape("\"\u{301}<\u{301}>\u{301}&\u{301}'\u{301}") == "&quot;\u{301}&lt;\u{301}&gt;\u{301}&amp;\u{301}&#39;\u{301}")
        let link = Markdown.html("[x](https://example.org/\"\u{301}onmouseover=alert(1))")
        #expect(MarkdownCheck.problem(in: link) == nil, "\(link)")
        #expect(link.contains("&quot;\u{301}onmouseover"))
    }

    /// Things the Markdown fuzzer found: emphasis markers that overlap must not produce
    /// mis-nested tags.
    @Test func markdownOverlappingEmphasisNests() {
        for text in ["**a*b**c*", "*a**b*c**", "***x***", "**a*b*c**", "a **b *c** d* e"] {
            let html = Markdown.html(text)
            #expect(MarkdownCheck.problem(in: html) == nil, "\(text) → \(html)")
        }
        #expect(Markdown.html("**bold** and *em*") == "<p><strong>bold</strong> and <em>em</em></p>\n")
    }
}
