// Float64 reference for swigluForward / swigluBackward:
//   h = silu(g)·u, silu(g) = g·σ(g);  dg = dh·u·σ(g)·(1 + g·(1 − σ(g))),  du = dh·silu(g)
const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

export function swigluReference(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const h = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) h[i] = gate[i] * sigmoid(gate[i]) * up[i];
  return h;
}

export function swigluBackwardReference(gate: ArrayLike<number>, up: ArrayLike<number>, dh: ArrayLike<number>) {
  const dgate = new Float64Array(gate.length), dup = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const s = sigmoid(gate[i]);
    dgate[i] = dh[i] * up[i] * s * (1 + gate[i] * (1 - s));
    dup[i] = dh[i] * gate[i] * s;
  }
  return { dgate, dup };
}
