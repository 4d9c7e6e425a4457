# What nix/tests/lib-test.nix and nix/tests/module-test.nix share: `run` takes a title
# and tests `{ name = { actual; expected; }; }` and gives the names of the tests when
# every actual value equals the expected one. Otherwise it fails naming each failed test
# (so `nix-instantiate --eval` fails): with both values, or, when an actual value
# throws, with that error (a conflict of definitions, say), since tryEval hides it.
let
  fails = expr: !(builtins.tryEval expr).success;

  run =
    title: tests:
    let
      names = builtins.attrNames tests;

      outcome =
        name:
        let
          inherit (tests.${name}) actual expected;
          evaluated = builtins.tryEval (builtins.deepSeq actual actual);
        in
        if !evaluated.success then
          "throws"
        else if evaluated.value == expected then
          "passed"
        else
          "failed";

      withOutcome = wanted: builtins.filter (name: outcome name == wanted) names;
      throwing = withOutcome "throws";
      failed = withOutcome "failed";

      describe =
        name:
        let
          inherit (tests.${name}) actual expected;
        in
        "${name}:\n  expected ${builtins.toJSON expected}\n  actual   ${builtins.toJSON actual}";

      summary = "${title} tests failed: ${builtins.concatStringsSep ", " (throwing ++ failed)}";
      first = builtins.head throwing;
    in
    if throwing != [ ] then
      builtins.trace "${summary}; ${first} throws:" (
        builtins.deepSeq tests.${first}.actual (throw "${first} threw only once")
      )
    else if failed != [ ] then
      throw "${summary}\n${builtins.concatStringsSep "\n" (map describe failed)}"
    else
      names;
in
{
  # Whether evaluating `expr` throws (or fails an assertion).
  inherit fails run;
}
