//! A test guest of the wrong world: a plain `wasi:cli` command component
//! (it exports `wasi:cli/run`) with none of the policy hooks. The host must
//! refuse to load it as a policy module, with an error naming the hooks it
//! looked for.

fn main() {
    eprintln!("not-a-policy: I am a command, not a wasmdock policy");
}
