"""Small pure helpers shared across packages (durations). Imports nothing of ours, so every
package may import it."""
