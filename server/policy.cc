#include "server/policy.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <sstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/certificate.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

// yaml-cpp throws; everything below turns its nodes and exceptions into Status at this boundary.
// `label` names the file in every message ("policy /etc/certcast/policy.yaml").

std::string Where(const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return "";
  return absl::StrCat(", line ", mark.line + 1, ", column ", mark.column + 1);
}

absl::Status Problem(const std::string& label, const YAML::Mark& mark, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(label, Where(mark), ": ", what));
}

// Counts the documents a parser reports and keeps where the second one starts; builds no nodes.
class DocumentCounter final : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ == 2) second_ = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  int documents() const { return documents_; }
  const YAML::Mark& second() const { return second_; }

 private:
  int documents_ = 0;
  YAML::Mark second_ = YAML::Mark::null_mark();
};

// The documents of `yaml`: exactly one, which is a map. Anything else is InvalidArgument.
absl::StatusOr<YAML::Node> LoadSingleMap(const std::string& yaml, const std::string& label) {
  // Not YAML::LoadAll: in yaml-cpp 0.7 it never returns for some malformed input ("," alone,
  // found by tests/fuzz: jbeder/yaml-cpp#1040, fixed upstream after 0.7), allocating a document
  // per turn until memory runs out. Load reads one document; the counter stops after two.
  YAML::Node first;
  DocumentCounter counter;
  try {
    first = YAML::Load(yaml);
    std::istringstream stream(yaml);
    YAML::Parser parser(stream);
    while (counter.documents() < 2 && parser.HandleNextDocument(counter)) {
    }
  } catch (const YAML::Exception& e) {
    return Problem(label, e.mark, absl::StrCat("not valid YAML: ", e.msg));
  }
  if (!first.IsDefined() || first.IsNull()) {
    return absl::InvalidArgumentError(absl::StrCat(label, " is empty"));
  }
  if (counter.documents() > 1) {
    return Problem(label, counter.second(),
                   "holds more than one YAML document; expected exactly one");
  }
  if (!first.IsMap()) {
    return Problem(label, first.Mark(), "expected a map at the top level");
  }
  return first;
}

// A map's entries with scalar keys, rejecting duplicate and unknown keys (`allowed` empty:
// any key). `what` names the map in messages.
absl::StatusOr<std::vector<std::pair<YAML::Node, YAML::Node>>> MapEntries(
    const YAML::Node& map, const std::string& label, absl::string_view what,
    const std::set<std::string>& allowed) {
  std::vector<std::pair<YAML::Node, YAML::Node>> entries;
  std::set<std::string> seen;
  for (const auto& entry : map) {
    if (!entry.first.IsScalar()) {
      return Problem(label, entry.first.Mark(), absl::StrCat(what, ": keys must be strings"));
    }
    const std::string& key = entry.first.Scalar();
    if (!allowed.empty() && allowed.count(key) == 0) {
      return Problem(label, entry.first.Mark(),
                     absl::StrCat(what, ": unknown key \"", absl::CEscape(key), "\" (expected ",
                                  absl::StrJoin(allowed, ", "), ")"));
    }
    if (!seen.insert(key).second) {
      return Problem(label, entry.first.Mark(),
                     absl::StrCat(what, ": key \"", absl::CEscape(key), "\" appears twice"));
    }
    entries.emplace_back(entry.first, entry.second);
  }
  return entries;
}

// A non-empty string scalar; `key_mark` is used when the value is null (yaml-cpp gives a null
// value the mark of whatever follows it).
absl::StatusOr<std::string> NonEmptyString(const YAML::Node& node, const YAML::Mark& key_mark,
                                           const std::string& label, absl::string_view what) {
  if (node.IsNull()) {
    return Problem(label, key_mark, absl::StrCat(what, " is missing (null)"));
  }
  if (!node.IsScalar()) {
    return Problem(label, node.Mark(), absl::StrCat(what, " must be a string"));
  }
  if (node.Scalar().empty()) return Problem(label, node.Mark(), absl::StrCat(what, " is empty"));
  return node.Scalar();
}

// Characters a namespace name may hold (DNS-1123 label), plus the two glob metacharacters.
bool IsNamespacePattern(const std::string& pattern) {
  for (char c : pattern) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '-' && c != '*' && c != '?') {
      return false;
    }
  }
  return true;
}

// RFC 1123 label as Kubernetes uses it for namespace names.
bool IsDns1123Label(const std::string& name) {
  if (name.empty() || name.size() > 63) return false;
  for (char c : name) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '-') return false;
  }
  return name.front() != '-' && name.back() != '-';
}

// Names end up in logs and the Admin API: printable ASCII, no spaces.
bool IsPrintableWord(const std::string& text) {
  for (unsigned char c : text) {
    if (c <= ' ' || c >= 0x7f) return false;
  }
  return true;
}

bool IsLowerHexSha256(const std::string& text) {
  if (text.size() != 64) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

absl::StatusOr<std::vector<std::string>> ParseNamespaces(const YAML::Node& node,
                                                         const YAML::Mark& key_mark,
                                                         const std::string& label,
                                                         const std::string& certificate) {
  const std::string what = absl::StrCat("certificate \"", certificate, "\": namespaces");
  if (node.IsNull()) {
    return Problem(label, key_mark, absl::StrCat(what, " is empty; list at least one"));
  }
  if (!node.IsSequence()) {
    return Problem(label, node.Mark(), absl::StrCat(what, " must be a list"));
  }
  if (node.size() == 0) {
    return Problem(label, node.Mark(), absl::StrCat(what, " is empty; list at least one"));
  }
  std::vector<std::string> patterns;
  for (const YAML::Node& item : node) {
    const std::string item_what = absl::StrCat(what, " entry ", patterns.size() + 1);
    ASSIGN_OR_RETURN(std::string pattern, NonEmptyString(item, key_mark, label, item_what));
    if (!IsNamespacePattern(pattern)) {
      return Problem(label, item.Mark(),
                     absl::StrCat(item_what, " \"", absl::CEscape(pattern),
                                  "\" can never match a namespace (allowed: lowercase letters, "
                                  "digits, '-', and the globs '*' and '?')"));
    }
    patterns.push_back(std::move(pattern));
  }
  return patterns;
}

// The string list `values` of a selector requirement.
absl::StatusOr<std::set<std::string>> ParseValues(const YAML::Node& node, const YAML::Mark& mark,
                                                  const std::string& label,
                                                  const std::string& what) {
  std::set<std::string> values;
  if (node.IsNull()) return values;
  if (!node.IsSequence()) return Problem(label, node.Mark(), absl::StrCat(what, " must be a list"));
  for (const YAML::Node& item : node) {
    ASSIGN_OR_RETURN(std::string value, NonEmptyString(item, mark, label, what));
    values.insert(std::move(value));
  }
  return values;
}

// `what` names the selector in errors ("certificate \"X\": namespaceSelector").
absl::StatusOr<LabelSelector> ParseSelector(const YAML::Node& node, const YAML::Mark& key_mark,
                                            const std::string& label, const std::string& what) {
  if (!node.IsMap()) {
    return Problem(label, node.IsNull() ? key_mark : node.Mark(),
                   absl::StrCat(what, " must be a map with matchLabels and/or matchExpressions"));
  }
  LabelSelector selector;
  ASSIGN_OR_RETURN(auto fields, MapEntries(node, label, what, {"matchLabels", "matchExpressions"}));
  for (const auto& [key, value] : fields) {
    if (key.Scalar() == "matchLabels") {
      if (!value.IsMap()) {
        return Problem(label, key.Mark(), absl::StrCat(what, ".matchLabels must be a map"));
      }
      ASSIGN_OR_RETURN(auto labels, MapEntries(value, label, what + ".matchLabels", {}));
      for (const auto& [label_key, label_value] : labels) {
        if (!label_value.IsScalar()) {
          return Problem(
              label, label_key.Mark(),
              absl::StrCat(what, ".matchLabels \"", label_key.Scalar(), "\" must be a string"));
        }
        selector.match_labels[label_key.Scalar()] = label_value.Scalar();
      }
      continue;
    }
    if (!value.IsSequence()) {
      return Problem(label, key.Mark(), absl::StrCat(what, ".matchExpressions must be a list"));
    }
    for (const YAML::Node& item : value) {
      const std::string item_what =
          absl::StrCat(what, ".matchExpressions entry ", selector.match_expressions.size() + 1);
      if (!item.IsMap()) return Problem(label, item.Mark(), item_what + " must be a map");
      ASSIGN_OR_RETURN(auto parts,
                       MapEntries(item, label, item_what, {"key", "operator", "values"}));
      LabelSelector::Requirement requirement;
      for (const auto& [part, part_value] : parts) {
        if (part.Scalar() == "key") {
          ASSIGN_OR_RETURN(requirement.key,
                           NonEmptyString(part_value, part.Mark(), label, item_what + " key"));
        } else if (part.Scalar() == "operator") {
          ASSIGN_OR_RETURN(requirement.op,
                           NonEmptyString(part_value, part.Mark(), label, item_what + " operator"));
        } else {
          ASSIGN_OR_RETURN(requirement.values,
                           ParseValues(part_value, part.Mark(), label, item_what + " values"));
        }
      }
      if (requirement.key.empty()) return Problem(label, item.Mark(), item_what + " has no key");
      const bool takes_values = requirement.op == "In" || requirement.op == "NotIn";
      if (!takes_values && requirement.op != "Exists" && requirement.op != "DoesNotExist") {
        return Problem(label, item.Mark(),
                       absl::StrCat(item_what, " operator \"", absl::CEscape(requirement.op),
                                    "\" is not In, NotIn, Exists or DoesNotExist"));
      }
      if (takes_values == requirement.values.empty()) {
        return Problem(
            label, item.Mark(),
            absl::StrCat(item_what, takes_values ? " needs values for " : " takes no values for ",
                         requirement.op));
      }
      selector.match_expressions.push_back(std::move(requirement));
    }
  }
  if (selector.match_labels.empty() && selector.match_expressions.empty()) {
    return Problem(label, key_mark,
                   absl::StrCat(what,
                                " is empty, which would grant every namespace (write "
                                "namespaces: [\"*\"] if that is meant)"));
  }
  return selector;
}

absl::StatusOr<absl::Duration> ParseDurationValue(const YAML::Node& node,
                                                  const YAML::Mark& key_mark,
                                                  const std::string& label,
                                                  const std::string& what) {
  ASSIGN_OR_RETURN(std::string text, NonEmptyString(node, key_mark, label, what));
  absl::Duration duration;
  if (!absl::ParseDuration(text, &duration) || duration < absl::ZeroDuration() ||
      duration == absl::InfiniteDuration()) {
    return Problem(label, node.Mark(),
                   absl::StrCat(what, " \"", absl::CEscape(text),
                                "\" is not a duration (e.g. 30s, 10m, 168h)"));
  }
  return duration;
}

absl::StatusOr<std::shared_ptr<const RolloutSpec>> ParseRollout(const YAML::Node& node,
                                                                const YAML::Mark& key_mark,
                                                                const std::string& label,
                                                                const std::string& certificate) {
  const std::string what = absl::StrCat("certificate \"", certificate, "\": rollout");
  if (!node.IsMap()) {
    return Problem(label, node.IsNull() ? key_mark : node.Mark(),
                   absl::StrCat(what,
                                " must be a map with waves (and optionally wave_timeout, "
                                "expiry_margin)"));
  }
  auto spec = std::make_shared<RolloutSpec>();
  ASSIGN_OR_RETURN(auto fields,
                   MapEntries(node, label, what, {"waves", "wave_timeout", "expiry_margin"}));
  bool has_waves = false;
  for (const auto& [key, value] : fields) {
    const std::string& field = key.Scalar();
    if (field == "wave_timeout") {
      ASSIGN_OR_RETURN(spec->wave_timeout,
                       ParseDurationValue(value, key.Mark(), label, what + ": wave_timeout"));
      continue;
    }
    if (field == "expiry_margin") {
      ASSIGN_OR_RETURN(spec->expiry_margin,
                       ParseDurationValue(value, key.Mark(), label, what + ": expiry_margin"));
      continue;
    }
    has_waves = true;
    if (!value.IsSequence() || value.size() == 0) {
      return Problem(label, value.IsNull() ? key.Mark() : value.Mark(),
                     absl::StrCat(what,
                                  ": waves must be a non-empty list (everyone else is the "
                                  "implicit last wave)"));
    }
    std::set<std::string> names;
    for (const YAML::Node& item : value) {
      const std::string wave_what = absl::StrCat(what, ": wave ", spec->waves.size() + 1);
      if (!item.IsMap()) {
        return Problem(label, item.Mark(),
                       absl::StrCat(wave_what,
                                    " must be a map with namespaces and/or "
                                    "namespaceSelector (and optionally name, soak, require)"));
      }
      ASSIGN_OR_RETURN(auto wave_fields,
                       MapEntries(item, label, wave_what,
                                  {"name", "namespaces", "namespaceSelector", "soak", "require"}));
      WaveSpec wave;
      wave.name = absl::StrCat("wave-", spec->waves.size() + 1);
      bool has_namespaces = false;
      for (const auto& [wave_key, wave_value] : wave_fields) {
        const std::string& wave_field = wave_key.Scalar();
        if (wave_field == "name") {
          ASSIGN_OR_RETURN(
              wave.name, NonEmptyString(wave_value, wave_key.Mark(), label, wave_what + ": name"));
          if (!IsPrintableWord(wave.name)) {
            return Problem(label, wave_value.Mark(),
                           absl::StrCat(wave_what,
                                        ": name must be printable ASCII without "
                                        "spaces"));
          }
        } else if (wave_field == "namespaces") {
          has_namespaces = true;
          ASSIGN_OR_RETURN(wave.namespaces,
                           ParseNamespaces(wave_value, wave_key.Mark(), label, certificate));
        } else if (wave_field == "namespaceSelector") {
          has_namespaces = true;
          ASSIGN_OR_RETURN(wave.selector,
                           ParseSelector(wave_value, wave_key.Mark(), label,
                                         absl::StrCat(wave_what, ": namespaceSelector")));
        } else if (wave_field == "soak") {
          ASSIGN_OR_RETURN(wave.soak, ParseDurationValue(wave_value, wave_key.Mark(), label,
                                                         wave_what + ": soak"));
        } else {  // require
          ASSIGN_OR_RETURN(std::string require, NonEmptyString(wave_value, wave_key.Mark(), label,
                                                               wave_what + ": require"));
          if (require != "acks" && require != "verified") {
            return Problem(label, wave_value.Mark(),
                           absl::StrCat(wave_what,
                                        ": require must be \"acks\" or \"verified\", "
                                        "not \"",
                                        absl::CEscape(require), "\""));
          }
          wave.require_verified = require == "verified";
        }
      }
      if (!has_namespaces) {
        return Problem(label, item.Mark(),
                       absl::StrCat(wave_what, " has no namespaces and no namespaceSelector"));
      }
      if (!names.insert(wave.name).second) {
        return Problem(label, item.Mark(),
                       absl::StrCat(wave_what, ": name \"", wave.name, "\" is used twice"));
      }
      spec->waves.push_back(std::move(wave));
    }
  }
  if (!has_waves) {
    return Problem(label, key_mark, absl::StrCat(what, " has no waves"));
  }
  WaveSpec everyone;
  everyone.name = "everyone-else";
  spec->waves.push_back(std::move(everyone));
  return std::shared_ptr<const RolloutSpec>(std::move(spec));
}

}  // namespace

bool WaveSpec::Matches(const std::string& namespace_, const NamespaceLabels* labels) const {
  if (namespaces.empty() && !selector.has_value()) return true;  // everyone else
  for (const std::string& pattern : namespaces) {
    if (GlobMatches(pattern, namespace_)) return true;
  }
  return labels != nullptr && selector.has_value() && selector->Matches(*labels);
}

size_t RolloutSpec::WaveOf(const std::string& namespace_, const NamespaceLabels* labels) const {
  for (size_t i = 0; i + 1 < waves.size(); ++i) {
    if (waves[i].Matches(namespace_, labels)) return i;
  }
  return waves.empty() ? 0 : waves.size() - 1;
}

bool RolloutSpec::UsesSelectors() const {
  for (const WaveSpec& wave : waves) {
    if (wave.selector.has_value()) return true;
  }
  return false;
}

absl::StatusOr<Policy> Policy::Parse(const std::string& yaml, const std::string& origin,
                                     const std::set<std::string>& known_certificates) {
  const std::string label = absl::StrCat("policy ", origin);
  ASSIGN_OR_RETURN(YAML::Node root, LoadSingleMap(yaml, label));
  Policy policy;
  try {
    ASSIGN_OR_RETURN(auto top, MapEntries(root, label, "top level", {"certificates", "admins"}));
    bool has_certificates = false;
    for (const auto& [key, value] : top) {
      if (key.Scalar() == "certificates") {
        has_certificates = true;
        if (!value.IsMap()) {
          return Problem(label, key.Mark(),
                         "certificates must be a map of certificate name to {namespaces: [...]}");
        }
        ASSIGN_OR_RETURN(auto certificates, MapEntries(value, label, "certificates", {}));
        for (const auto& [name_node, spec] : certificates) {
          const std::string& name = name_node.Scalar();
          if (known_certificates.count(name) == 0) {
            return absl::InvalidArgumentError(
                absl::StrCat(label, " names certificate \"", absl::CEscape(name),
                             "\", which this server does not distribute (--certificate)"));
          }
          const std::string what = absl::StrCat("certificate \"", name, "\"");
          if (!spec.IsMap()) {
            return Problem(label, name_node.Mark(),
                           absl::StrCat(what, " must be a map with key namespaces"));
          }
          ASSIGN_OR_RETURN(auto fields,
                           MapEntries(spec, label, what,
                                      {"namespaces", "namespaceSelector", "rollout", "writers"}));
          Grant& grant = policy.grants_[name];
          bool granted = false;
          for (const auto& [field, field_value] : fields) {
            if (field.Scalar() == "namespaces") {
              granted = true;
              ASSIGN_OR_RETURN(grant.patterns,
                               ParseNamespaces(field_value, field.Mark(), label, name));
            } else if (field.Scalar() == "namespaceSelector") {
              granted = true;
              ASSIGN_OR_RETURN(grant.selector,
                               ParseSelector(field_value, field.Mark(), label,
                                             absl::StrCat(what, ": namespaceSelector")));
            } else if (field.Scalar() == "writers") {
              if (!field_value.IsSequence() || field_value.size() == 0) {
                return Problem(label, field.Mark(),
                               absl::StrCat(what,
                                            ": writers must be a non-empty list of "
                                            "identities"));
              }
              ASSIGN_OR_RETURN(grant.writers, ParseValues(field_value, field.Mark(), label,
                                                          absl::StrCat(what, ": writers")));
            } else {
              ASSIGN_OR_RETURN(policy.rollouts_[name],
                               ParseRollout(field_value, field.Mark(), label, name));
            }
          }
          if (!granted) {
            return Problem(label, name_node.Mark(),
                           absl::StrCat(what, " has no namespaces and no namespaceSelector"));
          }
        }
      } else {                         // admins
        if (value.IsNull()) continue;  // "admins:" with every entry commented out
        if (!value.IsSequence()) {
          return Problem(label, key.Mark(), "admins must be a list of identities");
        }
        int index = 0;
        for (const YAML::Node& item : value) {
          ASSIGN_OR_RETURN(
              std::string admin,
              NonEmptyString(item, key.Mark(), label, absl::StrCat("admins entry ", ++index)));
          policy.admins_.insert(std::move(admin));
        }
      }
    }
    if (!has_certificates) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, " has no certificates section, so nobody may receive anything"));
    }
  } catch (const YAML::Exception& e) {
    return Problem(label, e.mark, e.msg);
  }
  return policy;
}

bool LabelSelector::Matches(const NamespaceLabels& labels) const {
  for (const auto& [key, value] : match_labels) {
    auto found = labels.find(key);
    if (found == labels.end() || found->second != value) return false;
  }
  for (const Requirement& requirement : match_expressions) {
    auto found = labels.find(requirement.key);
    const bool present = found != labels.end();
    if (requirement.op == "In") {
      if (!present || requirement.values.count(found->second) == 0) return false;
    } else if (requirement.op == "NotIn") {
      if (present && requirement.values.count(found->second) > 0) return false;
    } else if (requirement.op == "Exists") {
      if (!present) return false;
    } else if (requirement.op == "DoesNotExist") {
      if (present) return false;
    } else {
      return false;  // Parse admits no other operator
    }
  }
  return true;
}

std::string LabelSelector::ToString() const {
  std::vector<std::string> parts;
  for (const auto& [key, value] : match_labels) parts.push_back(absl::StrCat(key, "=", value));
  for (const Requirement& requirement : match_expressions) {
    if (requirement.op == "Exists") {
      parts.push_back(requirement.key);
    } else if (requirement.op == "DoesNotExist") {
      parts.push_back(absl::StrCat("!", requirement.key));
    } else {
      parts.push_back(absl::StrCat(requirement.key, requirement.op == "In" ? " in (" : " notin (",
                                   absl::StrJoin(requirement.values, ","), ")"));
    }
  }
  return absl::StrJoin(parts, ",");
}

bool Policy::Allows(const std::string& certificate, const std::string& namespace_,
                    const NamespaceLabels* labels) const {
  auto it = grants_.find(certificate);
  if (it == grants_.end() || namespace_.empty()) return false;
  for (const std::string& pattern : it->second.patterns) {
    if (GlobMatches(pattern, namespace_)) return true;
  }
  return labels != nullptr && it->second.selector.has_value() &&
         it->second.selector->Matches(*labels);
}

bool Policy::IsWriter(const std::string& certificate, const std::string& identity) const {
  auto it = grants_.find(certificate);
  return it != grants_.end() && !identity.empty() && it->second.writers.count(identity) > 0;
}

bool Policy::UsesSelectors() const {
  for (const auto& [name, grant] : grants_) {
    if (grant.selector.has_value()) return true;
  }
  for (const auto& [name, rollout] : rollouts_) {
    if (rollout->UsesSelectors()) return true;
  }
  return false;
}

std::vector<std::string> Policy::Certificates() const {
  std::vector<std::string> names;
  for (const auto& entry : grants_) names.push_back(entry.first);
  return names;
}

bool Policy::IsAdmin(const std::string& identity) const { return admins_.count(identity) > 0; }

std::vector<std::string> Policy::CertificatesFor(const std::string& namespace_,
                                                 const NamespaceLabels* labels) const {
  std::vector<std::string> certificates;
  for (const auto& entry : grants_) {
    if (Allows(entry.first, namespace_, labels)) certificates.push_back(entry.first);
  }
  return certificates;
}

std::shared_ptr<const RolloutSpec> Policy::RolloutOf(const std::string& certificate) const {
  auto it = rollouts_.find(certificate);
  return it == rollouts_.end() ? nullptr : it->second;
}

size_t Policy::certificate_count() const { return grants_.size(); }
size_t Policy::admin_count() const { return admins_.size(); }

// Two cursors, backtracking only to the most recent '*': O(|pattern| * |text|) at worst, no
// recursion, so patterns like "*a*a*a*b" cannot blow up.
bool GlobMatches(const std::string& pattern, const std::string& text) {
  size_t p = 0;
  size_t t = 0;
  size_t star = std::string::npos;  // position of the last '*' seen in pattern
  size_t star_text = 0;             // where in text that '*' currently ends
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      star_text = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++star_text;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// ---- PolicyFile -------------------------------------------------------------------------------

PolicyFile::PolicyFile(Filesystem* fs, std::string path, std::set<std::string> known,
                       absl::Duration poll_interval)
    : fs_(fs), path_(std::move(path)), known_(std::move(known)), poll_interval_(poll_interval) {}

absl::StatusOr<std::unique_ptr<PolicyFile>> PolicyFile::Open(
    Filesystem* fs, std::string path, std::set<std::string> known_certificates,
    absl::Duration poll_interval) {
  absl::StatusOr<std::string> text = fs->ReadFile(path);
  if (!text.ok()) return Annotate(text.status(), "reading policy");
  ASSIGN_OR_RETURN(Policy policy, Policy::Parse(*text, path, known_certificates));
  std::unique_ptr<PolicyFile> file(
      new PolicyFile(fs, std::move(path), std::move(known_certificates), poll_interval));
  absl::MutexLock lock(&file->mu_);
  file->policy_ = std::make_shared<const Policy>(std::move(policy));
  file->content_ = *text;
  file->policy_content_ = *std::move(text);
  return file;
}

PolicyFile::~PolicyFile() { Stop(); }

std::shared_ptr<const Policy> PolicyFile::current() const {
  absl::ReaderMutexLock lock(&mu_);
  return policy_;
}

void PolicyFile::OnChange(std::function<void()> on_change) {
  absl::MutexLock lock(&mu_);
  on_change_ = std::move(on_change);
}

std::string PolicyFile::last_error() const {
  absl::ReaderMutexLock lock(&mu_);
  return last_error_;
}

absl::Status PolicyFile::Reload() { return Check(); }

absl::Status PolicyFile::Check() {
  std::function<void()> notify;
  absl::Status result;
  {
    // Held across read and apply so that a slow read cannot overwrite a newer one.
    absl::MutexLock reload_lock(&reload_mu_);
    absl::StatusOr<std::string> text = fs_->ReadFile(path_);
    absl::MutexLock lock(&mu_);
    if (text.ok() && *text == content_ && !read_failed_) return status_;  // nothing new
    read_failed_ = !text.ok();
    std::shared_ptr<const Policy> parsed;
    if (!text.ok()) {
      result = Annotate(text.status(), "reading policy");
    } else {
      content_ = *std::move(text);
      if (content_ != policy_content_) {
        absl::StatusOr<Policy> policy = Policy::Parse(content_, path_, known_);
        result = policy.status();
        if (policy.ok()) parsed = std::make_shared<const Policy>(*std::move(policy));
      }
    }
    if (!result.ok()) {
      // Bad content is seen once per distinct text (content_ dedups it); an unreadable file is
      // seen on every poll, so only a new error is logged at warn.
      const bool repeated = read_failed_ && result == status_;
      if (repeated) {
        LogDebug("policy not reloaded, keeping the previous one",
                 {{"policy", path_}, {"error", result}});
      } else {
        LogWarn("policy not reloaded, keeping the previous one",
                {{"policy", path_}, {"error", result}});
      }
      status_ = result;
      last_error_ = std::string(result.message());
      return result;
    }
    status_ = absl::OkStatus();
    last_error_.clear();
    if (parsed == nullptr) {
      // Back to the text the current policy came from (after an error): nothing changed.
      LogInfo("policy loads again, unchanged", {{"policy", path_}});
      return result;
    }
    policy_ = std::move(parsed);
    policy_content_ = content_;
    LogInfo("policy reloaded", {{"policy", path_},
                                {"certificates", policy_->certificate_count()},
                                {"admins", policy_->admin_count()}});
    notify = on_change_;
  }
  if (notify) notify();
  return result;
}

void PolicyFile::Start() {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock wait_lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), poll_interval_);
        if (stopping_) return;
      }
      Check().IgnoreError();  // logged and kept in last_error()
    }
  });
}

void PolicyFile::Stop() {
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
}

// ---- TokenMap ---------------------------------------------------------------------------------

absl::StatusOr<TokenMap> TokenMap::Parse(const std::string& yaml, const std::string& origin) {
  const std::string label = absl::StrCat("token map ", origin);
  ASSIGN_OR_RETURN(YAML::Node root, LoadSingleMap(yaml, label));
  TokenMap map;
  try {
    ASSIGN_OR_RETURN(auto top, MapEntries(root, label, "top level", {"tokens"}));
    if (top.empty()) return absl::InvalidArgumentError(absl::StrCat(label, " has no tokens key"));
    const YAML::Node& key = top[0].first;
    const YAML::Node& tokens = top[0].second;
    if (tokens.IsNull()) return map;  // "tokens:" with every entry commented out
    if (!tokens.IsSequence()) {
      return Problem(label, key.Mark(), "tokens must be a list of {sha256, namespace, name}");
    }
    std::map<std::string, int> entry_of_hash;
    int index = 0;
    for (const YAML::Node& item : tokens) {
      const std::string what = absl::StrCat("tokens entry ", ++index);
      if (!item.IsMap()) {
        return Problem(label, item.IsNull() ? key.Mark() : item.Mark(),
                       absl::StrCat(what, " must be a map with sha256, namespace and name"));
      }
      ASSIGN_OR_RETURN(auto fields, MapEntries(item, label, what, {"name", "namespace", "sha256"}));
      std::map<std::string, std::string> values;
      for (const auto& [field, value] : fields) {
        ASSIGN_OR_RETURN(
            values[field.Scalar()],
            NonEmptyString(value, field.Mark(), label, absl::StrCat(what, ": ", field.Scalar())));
      }
      for (const char* required : {"sha256", "namespace", "name"}) {
        if (values.count(required) == 0) {
          return Problem(label, item.Mark(), absl::StrCat(what, " has no ", required));
        }
      }
      const std::string& hash = values["sha256"];
      if (!IsLowerHexSha256(hash)) {
        return Problem(label, item.Mark(),
                       absl::StrCat(what,
                                    ": sha256 must be 64 lowercase hex characters (the "
                                    "SHA-256 of the token, never the token itself)"));
      }
      if (!IsDns1123Label(values["namespace"])) {
        return Problem(label, item.Mark(),
                       absl::StrCat(what, ": namespace \"", absl::CEscape(values["namespace"]),
                                    "\" is not a DNS-1123 label"));
      }
      if (!IsPrintableWord(values["name"])) {
        return Problem(label, item.Mark(),
                       absl::StrCat(what, ": name \"", absl::CEscape(values["name"]),
                                    "\" must be printable ASCII without spaces"));
      }
      if (auto [it, inserted] = entry_of_hash.emplace(hash, index); !inserted) {
        return Problem(label, item.Mark(),
                       absl::StrCat(what, " repeats the sha256 of entry ", it->second));
      }
      map.by_hash_[hash] = StaticIdentity{values["namespace"], values["name"]};
    }
  } catch (const YAML::Exception& e) {
    return Problem(label, e.mark, e.msg);
  }
  return map;
}

const StaticIdentity* TokenMap::Find(const std::string& token) const {
  if (token.empty()) return nullptr;
  auto it = by_hash_.find(Sha256Hex(token));
  return it == by_hash_.end() ? nullptr : &it->second;
}

}  // namespace certcast
