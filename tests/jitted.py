"""qpt.dft's entry points jitted, for tests that call them outside a jit.

Run eagerly, each call dispatches its ~100 operations one by one, and a problem of a new shape
compiles each of them: `dft.fock` of water/def2-SVP took 7.5 s the first time and 1.6 s every
time after, jitted 1.6 s and then 10 ms (`loss_energy_delta` 5.2 s against 1.0 s). The functions
are the same; the tests that are about eager calls (errors named from concrete values) call
`qpt.dft` itself.
"""

import jax

import qpt

fock = jax.jit(qpt.dft.fock)
initial_fock = jax.jit(qpt.dft.initial_fock)
delta_energy = jax.jit(qpt.dft.delta_energy)
density_matrix = jax.jit(qpt.dft.density_matrix)
orbitals = jax.jit(qpt.dft.orbitals)
loss_energy = jax.jit(qpt.dft.loss_energy, static_argnums=(2, 3))
loss_energy_delta = jax.jit(qpt.dft.loss_energy_delta, static_argnums=(2, 3))
loss_self_consistency = jax.jit(qpt.dft.loss_self_consistency)
