// RFC 9529 §3 (EDHOC method 3, cipher suite 2), hex: the initiator's ephemeral key X and
// G_X, the responder's G_Y, the shared G_XY, and the initiator's static key SK_I with
// G_I = (x, y) from CRED_I. With the group order n (no private key) and an x with no point
// on P-256 (1 - 3 + b is not a square mod p). Shared by the P-256 unit tests
// (`src/p256.rs`) and the Cortex-M4 image (`tests/cortex-m/src/bin/link.rs`), which
// `include!` it.

const X: &str = "368ec1f69aeb659ba37d5a8d45b21bdc0299dceaa8ef235f3ca42ce3530f9525";
const G_X: &str = "8af6f430ebe18d34184017a9a11bf511c8dff8f834730b96c1b7c8dbca2fc3b6";
const G_Y: &str = "419701d7f00a26c2dc587a36dd752549f33763c893422c8ea0f955a13a4ff5d5";
const G_XY: &str = "2f0cb7e860ba538fbf5c8bded009f6259b4b628fe1eb7dbe9378e5ecf7a824ba";
const SK_I: &str = "fb13adeb6518cee5f88417660841142e830a81fe334380a953406a1305e8706b";
const G_I_X: &str = "ac75e9ece3e50bfc8ed60399889522405c47bf16df96660a41298cb4307f7eb6";
const G_I_Y: &str = "6e5de611388a4b8a8211334ac7d37ecb52a387d257e6db3c2a93df21ff3affc8";
const N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const NOT_X: &str = "0000000000000000000000000000000000000000000000000000000000000001";
