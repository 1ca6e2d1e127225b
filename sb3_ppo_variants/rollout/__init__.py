"""Collecting a rollout: SB3's loop on a leaner policy forward, value predictions in return units."""
