#include "server/policy.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/certificate.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeFilesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kOrigin[] = "/etc/certcast/policy.yaml";

const std::set<std::string>& Known() {
  static const auto* known = new std::set<std::string>{"wildcard", "internal"};
  return *known;
}

constexpr char kValidPolicy[] = R"(# comment
certificates:
  wildcard:
    namespaces: ["tenant-*", "shop"]
  internal:
    namespaces:
      - "*-prod"
      - ops
admins:
  - spiffe://cluster.local/ns/certcast-system/sa/operator
  - system:serviceaccount:certcast-system:operator
)";

Policy ParseOrDie(const std::string& yaml) {
  absl::StatusOr<Policy> policy = Policy::Parse(yaml, kOrigin, Known());
  EXPECT_TRUE(policy.ok()) << policy.status();
  return policy.ok() ? *std::move(policy) : Policy();
}

// ---- Policy::Parse ---------------------------------------------------------------------------

// A well-formed policy parses, and its rules are what the file says.
TEST(PolicyTest, ParsesValidPolicy) {
  Policy policy = ParseOrDie(kValidPolicy);
  EXPECT_EQ(policy.certificate_count(), 2u);
  EXPECT_EQ(policy.admin_count(), 2u);
  EXPECT_TRUE(policy.Allows("wildcard", "shop"));
  EXPECT_TRUE(policy.Allows("internal", "ops"));
}

// `writers` names identities that may write a certificate into the namespaces it is granted to;
// only for that certificate, and exactly those identities.
TEST(PolicyTest, WritersArePerCertificate) {
  Policy policy = ParseOrDie(R"(certificates:
  wildcard:
    namespaces: ["tenant-*"]
    writers: ["system:serviceaccount:certcast-system:certcast-writer"]
  internal:
    namespaces: [ops]
)");
  EXPECT_TRUE(policy.IsWriter("wildcard", "system:serviceaccount:certcast-system:certcast-writer"));
  EXPECT_FALSE(
      policy.IsWriter("internal", "system:serviceaccount:certcast-system:certcast-writer"));
  EXPECT_FALSE(policy.IsWriter("wildcard", "system:serviceaccount:tenant-a:certcast-client"));
  EXPECT_FALSE(policy.IsWriter("wildcard", ""));
  EXPECT_FALSE(policy.IsWriter("unknown", "system:serviceaccount:certcast-system:certcast-writer"));
  absl::StatusOr<Policy> empty = Policy::Parse(
      "certificates:\n  wildcard:\n    namespaces: [a]\n    writers: []\n", kOrigin, Known());
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("writers must be a non-empty list"));
}

// namespaceSelector grants by labels, with Kubernetes' semantics (NotIn and DoesNotExist also
// match a namespace without the key); names and selectors add up; unknown labels grant nothing.
TEST(PolicyTest, NamespaceSelectorMatchesLabels) {
  Policy policy = ParseOrDie(R"(certificates:
  wildcard:
    namespaces: [ops]
    namespaceSelector:
      matchLabels: {certcast.io/wildcard: "true"}
      matchExpressions:
        - {key: tier, operator: NotIn, values: [sandbox]}
        - {key: legacy, operator: DoesNotExist}
)");
  EXPECT_TRUE(policy.UsesSelectors());
  const NamespaceLabels granted = {{"certcast.io/wildcard", "true"}};
  EXPECT_TRUE(policy.Allows("wildcard", "shop", &granted));
  NamespaceLabels sandbox = granted;
  sandbox["tier"] = "sandbox";
  EXPECT_FALSE(policy.Allows("wildcard", "shop", &sandbox));
  NamespaceLabels prod = granted;
  prod["tier"] = "prod";
  EXPECT_TRUE(policy.Allows("wildcard", "shop", &prod));
  NamespaceLabels legacy = granted;
  legacy["legacy"] = "";
  EXPECT_FALSE(policy.Allows("wildcard", "shop", &legacy));
  const NamespaceLabels other = {{"certcast.io/wildcard", "false"}};
  EXPECT_FALSE(policy.Allows("wildcard", "shop", &other));
  EXPECT_FALSE(policy.Allows("wildcard", "shop")) << "labels unknown: the selector never matches";
  EXPECT_TRUE(policy.Allows("wildcard", "ops")) << "names still grant";
  EXPECT_EQ(policy.CertificatesFor("shop", &granted), std::vector<std::string>{"wildcard"});

  LabelSelector in;
  in.match_expressions.push_back({"tier", "In", {"prod", "staging"}});
  EXPECT_TRUE(in.Matches({{"tier", "staging"}}));
  EXPECT_FALSE(in.Matches({}));
  LabelSelector exists;
  exists.match_expressions.push_back({"tier", "Exists", {}});
  EXPECT_TRUE(exists.Matches({{"tier", ""}}));
  EXPECT_FALSE(exists.Matches({{"other", "x"}}));
}

// `admins` may be left out; nobody is then an admin.
TEST(PolicyTest, AdminsAreOptional) {
  Policy policy = ParseOrDie("certificates:\n  wildcard:\n    namespaces: [shop]\n");
  EXPECT_EQ(policy.admin_count(), 0u);
  EXPECT_FALSE(policy.IsAdmin(""));
}

// A rollout's waves parse in order, with the implicit last wave "everyone else"; a namespace
// belongs to the first wave that matches it. Without `rollout:` a certificate has none.
TEST(PolicyTest, ParsesRolloutWavesWithEveryoneElseLast) {
  Policy policy = ParseOrDie(R"(certificates:
  wildcard:
    namespaces: ["*"]
    rollout:
      waves:
        - {name: canary, namespaces: [canary], soak: 30m, require: verified}
        - {namespaces: ["tenant-*", canary]}
      wave_timeout: 5m
  internal:
    namespaces: [ops]
)");
  std::shared_ptr<const RolloutSpec> spec = policy.RolloutOf("wildcard");
  ASSERT_NE(spec, nullptr);
  ASSERT_EQ(spec->waves.size(), 3u);
  EXPECT_EQ(spec->waves[0].name, "canary");
  EXPECT_EQ(spec->waves[0].soak, absl::Minutes(30));
  EXPECT_TRUE(spec->waves[0].require_verified);
  EXPECT_EQ(spec->waves[1].name, "wave-2");
  EXPECT_FALSE(spec->waves[1].require_verified);
  EXPECT_EQ(spec->waves[2].name, "everyone-else");
  EXPECT_EQ(spec->wave_timeout, absl::Minutes(5));
  EXPECT_EQ(spec->expiry_margin, absl::Hours(24 * 7));
  EXPECT_EQ(spec->WaveOf("canary", nullptr), 0u);
  EXPECT_EQ(spec->WaveOf("tenant-a", nullptr), 1u);
  EXPECT_EQ(spec->WaveOf("shop", nullptr), 2u);
  EXPECT_FALSE(spec->UsesSelectors());
  EXPECT_FALSE(policy.UsesSelectors());
  EXPECT_EQ(policy.RolloutOf("internal"), nullptr);
}

// A wave may choose its namespaces by label, with names besides; unknown labels match no
// selector, so such a namespace waits for the last wave. A selector wave needs the namespace
// watch, like a selector grant.
TEST(PolicyTest, RolloutWavesChooseNamespacesByLabel) {
  Policy policy = ParseOrDie(R"(certificates:
  wildcard:
    namespaces: ["*"]
    rollout:
      waves:
        - name: canary
          namespaceSelector: {matchLabels: {certcast.io/wave: canary}}
          namespaces: [ops]
        - name: early
          namespaceSelector:
            matchExpressions: [{key: tier, operator: In, values: [free, trial]}]
)");
  std::shared_ptr<const RolloutSpec> spec = policy.RolloutOf("wildcard");
  ASSERT_NE(spec, nullptr);
  ASSERT_EQ(spec->waves.size(), 3u);
  const NamespaceLabels canary = {{"certcast.io/wave", "canary"}, {"tier", "free"}};
  const NamespaceLabels free = {{"tier", "free"}};
  const NamespaceLabels paid = {{"tier", "paid"}};
  EXPECT_EQ(spec->WaveOf("tenant-a", &canary), 0u);  // the first wave that matches
  EXPECT_EQ(spec->WaveOf("ops", &paid), 0u);         // by name
  EXPECT_EQ(spec->WaveOf("tenant-b", &free), 1u);
  EXPECT_EQ(spec->WaveOf("tenant-c", &paid), 2u);
  EXPECT_EQ(spec->WaveOf("tenant-a", nullptr), 2u);  // labels unknown
  EXPECT_TRUE(spec->UsesSelectors());
  EXPECT_TRUE(policy.UsesSelectors());
  EXPECT_EQ(spec->waves[0].selector->ToString(), "certcast.io/wave=canary");
  EXPECT_EQ(spec->waves[1].selector->ToString(), "tier in (free,trial)");
}

struct BadPolicy {
  std::string test_name;
  std::string yaml;
  std::string problem;  // a substring the error must contain besides the file name
};

class PolicyRejectsTest : public ::testing::TestWithParam<BadPolicy> {};

// Each malformed policy is InvalidArgument naming the file and saying what is wrong.
TEST_P(PolicyRejectsTest, NamesFileAndProblem) {
  absl::StatusOr<Policy> policy = Policy::Parse(GetParam().yaml, kOrigin, Known());
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(policy.status().message(),
              AllOf(HasSubstr(std::string("policy ") + kOrigin), HasSubstr(GetParam().problem)));
}

INSTANTIATE_TEST_SUITE_P(
    Policy, PolicyRejectsTest,
    ::testing::Values(
        BadPolicy{"NotYaml", "certificates: [wildcard\n", "line 2, column 1: not valid YAML"},
        BadPolicy{"NotAMap", "- wildcard\n", "expected a map at the top level"},
        BadPolicy{"EmptyFile", "", "is empty"},
        BadPolicy{"OnlyComments", "# nothing yet\n", "is empty"},
        // Found by tests/fuzz: yaml-cpp 0.7's LoadAll never returned for these.
        BadPolicy{"LoneComma", ",", "is empty"},
        BadPolicy{"CommasAndBytes", ",\x82M,\x82", "is empty"},
        BadPolicy{"UnknownTopLevelKey",
                  "certificates:\n  wildcard:\n    namespaces: [a]\nadmin: [x]\n",
                  "line 4, column 1: top level: unknown key \"admin\""},
        BadPolicy{"UnknownCertificate", "certificates:\n  foo:\n    namespaces: [a]\n",
                  "names certificate \"foo\", which this server does not distribute "
                  "(--certificate)"},
        BadPolicy{"CertificateWithoutNamespaces", "certificates:\n  wildcard: {}\n",
                  "certificate \"wildcard\" has no namespaces"},
        BadPolicy{"CertificateNull", "certificates:\n  wildcard:\n",
                  "certificate \"wildcard\" must be a map"},
        BadPolicy{"UnknownCertificateKey", "certificates:\n  wildcard:\n    namespace: [a]\n",
                  "unknown key \"namespace\""},
        BadPolicy{"EmptyNamespaceList", "certificates:\n  wildcard:\n    namespaces: []\n",
                  "namespaces is empty"},
        BadPolicy{"NullNamespaceList", "certificates:\n  wildcard:\n    namespaces:\n",
                  "namespaces is empty"},
        BadPolicy{"NamespacesNotAList", "certificates:\n  wildcard:\n    namespaces: shop\n",
                  "namespaces must be a list"},
        BadPolicy{"NonStringNamespace",
                  "certificates:\n  wildcard:\n    namespaces: [shop, {a: b}]\n",
                  "namespaces entry 2 must be a string"},
        BadPolicy{"EmptyGlob", "certificates:\n  wildcard:\n    namespaces: [\"\"]\n",
                  "namespaces entry 1 is empty"},
        BadPolicy{"PatternThatCannotMatch",
                  "certificates:\n  wildcard:\n    namespaces: [Tenant-*]\n",
                  "\"Tenant-*\" can never match"},
        BadPolicy{"CertificatesNotAMap", "certificates: [wildcard]\n",
                  "certificates must be a map"},
        BadPolicy{"NoCertificates", "admins: [x]\n", "has no certificates section"},
        BadPolicy{"DuplicateCertificate",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n  wildcard:\n"
                  "    namespaces: [b]\n",
                  "line 4, column 3: certificates: key \"wildcard\" appears twice"},
        BadPolicy{"AdminsNotAList",
                  "certificates:\n  wildcard:\n    namespaces: [a]\nadmins: operator\n",
                  "admins must be a list"},
        BadPolicy{"NonStringAdmin",
                  "certificates:\n  wildcard:\n    namespaces: [a]\nadmins: [[x]]\n",
                  "admins entry 1 must be a string"},
        BadPolicy{"EmptySelector", "certificates:\n  wildcard:\n    namespaceSelector: {}\n",
                  "namespaceSelector is empty, which would grant every namespace"},
        BadPolicy{"SelectorBadOperator",
                  "certificates:\n  wildcard:\n    namespaceSelector:\n      matchExpressions: "
                  "[{key: a, operator: Like, values: [b]}]\n",
                  "operator \"Like\" is not In, NotIn, Exists or DoesNotExist"},
        BadPolicy{"SelectorInWithoutValues",
                  "certificates:\n  wildcard:\n    namespaceSelector:\n      matchExpressions: "
                  "[{key: a, operator: In}]\n",
                  "needs values for In"},
        BadPolicy{"SelectorExistsWithValues",
                  "certificates:\n  wildcard:\n    namespaceSelector:\n      matchExpressions: "
                  "[{key: a, operator: Exists, values: [b]}]\n",
                  "takes no values for Exists"},
        BadPolicy{"NoGrantAtAll", "certificates:\n  wildcard: {}\n",
                  "has no namespaces and no namespaceSelector"},
        BadPolicy{"RolloutWithoutWaves",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n    rollout: {}\n",
                  "certificate \"wildcard\": rollout has no waves"},
        BadPolicy{"RolloutWaveWithoutNamespaces",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n    rollout:\n"
                  "      waves: [{name: canary}]\n",
                  "rollout: wave 1 has no namespaces and no namespaceSelector"},
        BadPolicy{"RolloutWaveWithEmptySelector",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n    rollout:\n"
                  "      waves: [{namespaceSelector: {}}]\n",
                  "rollout: wave 1: namespaceSelector is empty"},
        BadPolicy{"RolloutBadSoak",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n    rollout:\n"
                  "      waves: [{namespaces: [a], soak: soon}]\n",
                  "soak \"soon\" is not a duration"},
        BadPolicy{"RolloutBadRequire",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n    rollout:\n"
                  "      waves: [{namespaces: [a], require: proof}]\n",
                  "require must be \"acks\" or \"verified\""},
        BadPolicy{"RolloutDuplicateWave",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n    rollout:\n"
                  "      waves: [{name: x, namespaces: [a]}, {name: x, namespaces: [b]}]\n",
                  "name \"x\" is used twice"},
        BadPolicy{"TwoDocuments",
                  "certificates:\n  wildcard:\n    namespaces: [a]\n---\nadmins: [x]\n",
                  "more than one YAML document"}),
    [](const ::testing::TestParamInfo<BadPolicy>& param) { return param.param.test_name; });

// ---- GlobMatches ------------------------------------------------------------------------------

// '*' matches any run after a prefix, but not an empty remainder missing the prefix's dash.
TEST(GlobTest, PrefixStarMatchesSuffixes) {
  EXPECT_TRUE(GlobMatches("tenant-*", "tenant-a"));
  EXPECT_TRUE(GlobMatches("tenant-*", "tenant-"));
  EXPECT_FALSE(GlobMatches("tenant-*", "tenant"));
  EXPECT_FALSE(GlobMatches("tenant-*", "xtenant-a"));
}

// A lone '*' matches every name, including the empty one.
TEST(GlobTest, StarMatchesEverything) {
  EXPECT_TRUE(GlobMatches("*", "anything"));
  EXPECT_TRUE(GlobMatches("*", ""));
  EXPECT_TRUE(GlobMatches("**", "a"));
}

// '?' matches exactly one character.
TEST(GlobTest, QuestionMarkMatchesOneCharacter) {
  EXPECT_TRUE(GlobMatches("a?c", "abc"));
  EXPECT_FALSE(GlobMatches("a?c", "ac"));
  EXPECT_FALSE(GlobMatches("a?c", "abbc"));
}

// A pattern without metacharacters matches only the same whole string.
TEST(GlobTest, ExactNamesMatchWholeString) {
  EXPECT_TRUE(GlobMatches("shop", "shop"));
  EXPECT_FALSE(GlobMatches("shop", "shops"));
  EXPECT_FALSE(GlobMatches("shop", "shop-prod"));
  EXPECT_FALSE(GlobMatches("shop", ""));
  EXPECT_TRUE(GlobMatches("", ""));
}

// Suffix and infix stars need backtracking to the last '*'.
TEST(GlobTest, SuffixAndInfixStars) {
  EXPECT_TRUE(GlobMatches("*-prod", "shop-prod"));
  EXPECT_TRUE(GlobMatches("*-prod", "-prod"));
  EXPECT_FALSE(GlobMatches("*-prod", "shop-prod-2"));
  EXPECT_TRUE(GlobMatches("t*-*-prod", "team-a-b-prod"));
  EXPECT_TRUE(GlobMatches("a*b?d", "axxbbcd"));
  EXPECT_FALSE(GlobMatches("a*b?d", "axxbd"));
}

// A pattern that makes a recursive matcher exponential finishes fast.
TEST(GlobTest, PathologicalPatternFinishesFast) {
  const std::string text(20000, 'a');
  const absl::Time start = absl::Now();
  EXPECT_FALSE(GlobMatches("*a*a*a*a*b", text));
  EXPECT_TRUE(GlobMatches("*a*a*a*a*", text));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
}

// ---- Allows / IsAdmin / CertificatesFor --------------------------------------------------------

// Allows applies the certificate's own patterns and denies everything else by default.
TEST(PolicyTest, AllowsPerCertificate) {
  Policy policy = ParseOrDie(kValidPolicy);
  EXPECT_TRUE(policy.Allows("wildcard", "tenant-a"));
  EXPECT_FALSE(policy.Allows("wildcard", "tenant"));
  EXPECT_FALSE(policy.Allows("wildcard", "ops"));  // listed for internal only
  EXPECT_TRUE(policy.Allows("internal", "shop-prod"));
  EXPECT_FALSE(policy.Allows("internal", "shop"));
  EXPECT_FALSE(policy.Allows("unknown", "shop"));
  EXPECT_FALSE(policy.Allows("wildcard", ""));
}

// Only identities listed verbatim are admins.
TEST(PolicyTest, IsAdminMatchesExactIdentity) {
  Policy policy = ParseOrDie(kValidPolicy);
  EXPECT_TRUE(policy.IsAdmin("spiffe://cluster.local/ns/certcast-system/sa/operator"));
  EXPECT_TRUE(policy.IsAdmin("system:serviceaccount:certcast-system:operator"));
  EXPECT_FALSE(policy.IsAdmin("system:serviceaccount:certcast-system:other"));
  EXPECT_FALSE(policy.IsAdmin("spiffe://cluster.local/ns/certcast-system/sa/operator/x"));
}

// CertificatesFor lists every certificate whose patterns match, and none for others.
TEST(PolicyTest, CertificatesForListsMatchingCertificates) {
  Policy policy = ParseOrDie(
      "certificates:\n  wildcard:\n    namespaces: [\"tenant-*\"]\n"
      "  internal:\n    namespaces: [\"*-prod\"]\n");
  EXPECT_THAT(policy.CertificatesFor("tenant-prod"), ElementsAre("internal", "wildcard"));
  EXPECT_THAT(policy.CertificatesFor("tenant-a"), ElementsAre("wildcard"));
  EXPECT_THAT(policy.CertificatesFor("default"), IsEmpty());
}

// ---- PolicyFile -------------------------------------------------------------------------------

constexpr char kPath[] = "/etc/certcast/policy.yaml";
constexpr char kPolicyA[] = "certificates:\n  wildcard:\n    namespaces: [shop]\n";
constexpr char kPolicyB[] =
    "certificates:\n  wildcard:\n    namespaces: [shop, \"tenant-*\"]\nadmins: [root]\n";

class PolicyFileTest : public ::testing::Test {
 protected:
  std::unique_ptr<PolicyFile> OpenOrDie(absl::Duration poll_interval = absl::Hours(1)) {
    absl::StatusOr<std::unique_ptr<PolicyFile>> file =
        PolicyFile::Open(&fs_, kPath, Known(), poll_interval);
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return nullptr;
    (*file)->OnChange([this] {
      absl::MutexLock lock(&mu_);
      ++changes_;
    });
    return *std::move(file);
  }
  int changes() {
    absl::MutexLock lock(&mu_);
    return changes_;
  }

  FakeFilesystem fs_;
  absl::Mutex mu_;
  int changes_ ABSL_GUARDED_BY(mu_) = 0;
};

// Open refuses a file that does not exist, naming it.
TEST_F(PolicyFileTest, OpenFailsForMissingFile) {
  absl::StatusOr<std::unique_ptr<PolicyFile>> file = PolicyFile::Open(&fs_, kPath, Known());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(kPath));
}

// Open refuses a policy that does not parse, with the parser's error.
TEST_F(PolicyFileTest, OpenFailsForInvalidPolicy) {
  fs_.AddFile(kPath, "certificates:\n  foo:\n    namespaces: [a]\n");
  absl::StatusOr<std::unique_ptr<PolicyFile>> file = PolicyFile::Open(&fs_, kPath, Known());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr(std::string("policy ") + kPath));
}

// Reload picks up changed content, swaps the policy and tells the listener.
TEST_F(PolicyFileTest, ReloadAppliesChangedContent) {
  fs_.AddFile(kPath, kPolicyA);
  auto file = OpenOrDie();
  ASSERT_NE(file, nullptr);
  EXPECT_FALSE(file->current()->Allows("wildcard", "tenant-a"));
  fs_.AddFile(kPath, kPolicyB);
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_TRUE(file->current()->Allows("wildcard", "tenant-a"));
  EXPECT_TRUE(file->current()->IsAdmin("root"));
  EXPECT_EQ(changes(), 1);
  EXPECT_EQ(file->last_error(), "");
}

// Identical content is no change: same policy object, no on_change.
TEST_F(PolicyFileTest, IdenticalContentDoesNotNotify) {
  fs_.AddFile(kPath, kPolicyA);
  auto file = OpenOrDie();
  ASSERT_NE(file, nullptr);
  std::shared_ptr<const Policy> before = file->current();
  fs_.AddFile(kPath, kPolicyA);
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_EQ(file->current(), before);
  EXPECT_EQ(changes(), 0);
  fs_.AddFile(kPath, kPolicyB);
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_EQ(changes(), 1);
}

// A bad policy keeps the old one and reports why; a later good one recovers.
TEST_F(PolicyFileTest, BadContentKeepsOldPolicyUntilGoodContent) {
  fs_.AddFile(kPath, kPolicyA);
  auto file = OpenOrDie();
  ASSERT_NE(file, nullptr);
  std::shared_ptr<const Policy> before = file->current();

  fs_.AddFile(kPath, "certificates:\n  wildcard:\n    namespaces: []\n");
  absl::Status status = file->Reload();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(file->current(), before);
  EXPECT_THAT(file->last_error(), AllOf(HasSubstr(kPath), HasSubstr("namespaces is empty")));
  // Asking again about the same bad text gives the same answer.
  EXPECT_EQ(file->Reload(), status);
  EXPECT_EQ(changes(), 0);

  fs_.AddFile(kPath, kPolicyB);
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_TRUE(file->current()->Allows("wildcard", "tenant-a"));
  EXPECT_EQ(file->last_error(), "");
  EXPECT_EQ(changes(), 1);
}

// Going back to the text of the current policy after a bad edit changes nothing.
TEST_F(PolicyFileTest, RevertAfterBadContentDoesNotNotify) {
  fs_.AddFile(kPath, kPolicyA);
  auto file = OpenOrDie();
  ASSERT_NE(file, nullptr);
  std::shared_ptr<const Policy> before = file->current();
  fs_.AddFile(kPath, "not: [valid");
  EXPECT_FALSE(file->Reload().ok());
  fs_.AddFile(kPath, kPolicyA);
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_EQ(file->current(), before);
  EXPECT_EQ(file->last_error(), "");
  EXPECT_EQ(changes(), 0);
}

// A vanished file is an error like a bad one: the old policy stays until the file is back.
TEST_F(PolicyFileTest, MissingFileKeepsOldPolicy) {
  fs_.AddFile(kPath, kPolicyA);
  auto file = OpenOrDie();
  ASSERT_NE(file, nullptr);
  std::shared_ptr<const Policy> before = file->current();
  ASSERT_TRUE(fs_.Remove(kPath).ok());
  EXPECT_EQ(file->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(file->current(), before);
  EXPECT_THAT(file->last_error(), HasSubstr(kPath));

  fs_.AddFile(kPath, kPolicyA);  // back, unchanged
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_EQ(file->last_error(), "");
  EXPECT_EQ(file->current(), before);
  EXPECT_EQ(changes(), 0);
}

// A ConfigMap-style ..data symlink swap is seen through the content behind the links.
TEST_F(PolicyFileTest, FollowsConfigMapSymlinkSwap) {
  fs_.AddFile("/etc/certcast/..v1/policy.yaml", kPolicyA);
  fs_.AddFile("/etc/certcast/..v2/policy.yaml", kPolicyB);
  fs_.AddSymlink("..v1", "/etc/certcast/..data");
  fs_.AddSymlink("..data/policy.yaml", kPath);
  auto file = OpenOrDie();
  ASSERT_NE(file, nullptr);
  EXPECT_FALSE(file->current()->Allows("wildcard", "tenant-a"));

  ASSERT_TRUE(fs_.Symlink("..v2", "/etc/certcast/..data_tmp").ok());
  ASSERT_TRUE(fs_.Rename("/etc/certcast/..data_tmp", "/etc/certcast/..data").ok());
  EXPECT_TRUE(file->Reload().ok());
  EXPECT_TRUE(file->current()->Allows("wildcard", "tenant-a"));
  EXPECT_EQ(changes(), 1);
}

// The polling thread notices a change on its own.
TEST_F(PolicyFileTest, PollingThreadPicksUpChange) {
  fs_.AddFile(kPath, kPolicyA);
  auto file = OpenOrDie(absl::Milliseconds(10));
  ASSERT_NE(file, nullptr);
  file->Start();
  fs_.AddFile(kPath, kPolicyB);
  {
    absl::MutexLock lock(&mu_);
    const bool changed = mu_.AwaitWithTimeout(absl::Condition(
                                                  +[](int* n) { return *n > 0; }, &changes_),
                                              absl::Seconds(20));
    EXPECT_TRUE(changed);
  }
  EXPECT_TRUE(file->current()->Allows("wildcard", "tenant-a"));
  file->Stop();
}

// Stop wakes the polling thread at once instead of waiting out the poll interval.
TEST_F(PolicyFileTest, StopDoesNotWaitForPollInterval) {
  fs_.AddFile(kPath, kPolicyA);
  auto file = OpenOrDie(absl::Seconds(60));
  ASSERT_NE(file, nullptr);
  file->Start();
  const absl::Time start = absl::Now();
  file->Stop();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

// ---- TokenMap ---------------------------------------------------------------------------------

constexpr char kTokenOrigin[] = "/etc/certcast/tokens.yaml";

std::string TokenYaml(const std::string& entries) { return "tokens:\n" + entries; }
std::string Entry(const std::string& hash, const std::string& ns, const std::string& name) {
  return "  - sha256: " + hash + "\n    namespace: " + ns + "\n    name: " + name + "\n";
}

// Listed tokens resolve to their identity by hash; others do not resolve.
TEST(TokenMapTest, FindsListedTokensByHash) {
  absl::StatusOr<TokenMap> map =
      TokenMap::Parse(TokenYaml(Entry(Sha256Hex("secret-1"), "edge", "host-1") +
                                Entry(Sha256Hex("secret-2"), "edge-2", "host-2")),
                      kTokenOrigin);
  ASSERT_TRUE(map.ok()) << map.status();
  const StaticIdentity* one = map->Find("secret-1");
  ASSERT_NE(one, nullptr);
  EXPECT_EQ(one->namespace_, "edge");
  EXPECT_EQ(one->name, "host-1");
  ASSERT_NE(map->Find("secret-2"), nullptr);
  EXPECT_EQ(map->Find("secret-2")->name, "host-2");
  EXPECT_EQ(map->Find("secret-3"), nullptr);
  EXPECT_EQ(map->Find(Sha256Hex("secret-1")), nullptr);  // the hash is not the token
  EXPECT_EQ(map->Find(""), nullptr);
}

// Two tokens for the same identity (rotation) are fine.
TEST(TokenMapTest, AllowsTwoTokensForOneIdentity) {
  absl::StatusOr<TokenMap> map =
      TokenMap::Parse(TokenYaml(Entry(Sha256Hex("old"), "edge", "host-1") +
                                Entry(Sha256Hex("new"), "edge", "host-1")),
                      kTokenOrigin);
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_NE(map->Find("old"), nullptr);
  EXPECT_NE(map->Find("new"), nullptr);
}

struct BadTokenMap {
  std::string test_name;
  std::string yaml;
  std::string problem;
};

class TokenMapRejectsTest : public ::testing::TestWithParam<BadTokenMap> {};

// Each malformed token map is InvalidArgument naming the file and the problem.
TEST_P(TokenMapRejectsTest, NamesFileAndProblem) {
  absl::StatusOr<TokenMap> map = TokenMap::Parse(GetParam().yaml, kTokenOrigin);
  ASSERT_FALSE(map.ok());
  EXPECT_EQ(map.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(map.status().message(), AllOf(HasSubstr(std::string("token map ") + kTokenOrigin),
                                            HasSubstr(GetParam().problem)));
}

const std::string kHash = Sha256Hex("token");  // NOLINT: test-only constant

INSTANTIATE_TEST_SUITE_P(
    TokenMap, TokenMapRejectsTest,
    ::testing::Values(
        BadTokenMap{"NotYaml", "tokens: [", "not valid YAML"},
        BadTokenMap{"EmptyFile", "", "is empty"}, BadTokenMap{"LoneComma", "\n,\n", "is empty"},
        BadTokenMap{"UnknownTopLevelKey", "token: []\n", "unknown key \"token\""},
        BadTokenMap{"TokensNotAList", "tokens: {a: b}\n", "tokens must be a list"},
        BadTokenMap{"EntryNotAMap", "tokens: [abc]\n", "tokens entry 1 must be a map"},
        BadTokenMap{"UppercaseHash", TokenYaml(Entry(absl::AsciiStrToUpper(kHash), "edge", "h")),
                    "sha256 must be 64 lowercase hex"},
        BadTokenMap{"ShortHash", TokenYaml(Entry(kHash.substr(1), "edge", "h")),
                    "sha256 must be 64 lowercase hex"},
        BadTokenMap{"PlainTokenInsteadOfHash", TokenYaml(Entry("my-secret-token", "edge", "h")),
                    "sha256 must be 64 lowercase hex"},
        BadTokenMap{"BadNamespace", TokenYaml(Entry(kHash, "Edge_1", "h")),
                    "namespace \"Edge_1\" is not a DNS-1123 label"},
        BadTokenMap{"NamespaceEndsWithDash", TokenYaml(Entry(kHash, "edge-", "h")),
                    "is not a DNS-1123 label"},
        BadTokenMap{"MissingName", TokenYaml("  - sha256: " + kHash + "\n    namespace: edge\n"),
                    "tokens entry 1 has no name"},
        BadTokenMap{"EmptyName", TokenYaml(Entry(kHash, "edge", "\"\"")),
                    "tokens entry 1: name is empty"},
        BadTokenMap{"NameWithSpace", TokenYaml(Entry(kHash, "edge", "\"a b\"")),
                    "must be printable ASCII without spaces"},
        BadTokenMap{"UnknownField", TokenYaml(Entry(kHash, "edge", "h") + "    token: x\n"),
                    "unknown key \"token\""},
        BadTokenMap{"DuplicateHash",
                    TokenYaml(Entry(kHash, "edge", "a") + Entry(kHash, "other", "b")),
                    "tokens entry 2 repeats the sha256 of entry 1"}),
    [](const ::testing::TestParamInfo<BadTokenMap>& param) { return param.param.test_name; });

}  // namespace
}  // namespace certcast
