// A partial-credit reward for examples/own-task/codes.jsonl: the fraction of the code's digits
// the completion gets right, place by place (half that when its length is wrong). Unlike the
// 0/1 `math` reward, a completion with one wrong digit still scores 7/8, so a group of
// rollouts that are all wrong somewhere still has an order to learn from.
export default function digits(example, completion) {
  const want = String(example.answer);
  const got = completion.trim();
  let same = 0;
  for (let i = 0; i < want.length; i++) if (got[i] === want[i]) same++;
  return (got.length === want.length ? 1 : 0.5) * same / want.length;
}
