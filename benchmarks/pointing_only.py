"""The eyes: the real image path on the oracle's task, pointing and counting only (chapter 10, docs/recipes.md).

    python -m benchmarks.pointing_only                       # the default configuration (DEFAULT), 10 minutes
    python -m benchmarks.pointing_only NAME [--minutes 10] [--heldout 200] [--evals 5] [--seed N]
    python -m benchmarks.pointing_only --list                # the configurations and what each changes

Each configuration is a ``molmo_lite.pointing_only.EyesConfig``: the geometry of the image path inside Molmo's
design (scene size, crops, patches, pooling, the ViT's size) and the recipe (by default the oracle harness's o16:
Muon, the question before the image, rows in chunks of similar length). The whole tiny Molmo trains for ``--minutes``
of training time (drawing and preprocessing the scenes counted, the evaluations not) on chapter 07's scenes with their
three annotations; held-out scenes are chapter 07's. Writes benchmarks/results/pointing_only.json (keys as the
oracle's: NAME, NAME-<M>min, -seed<N>) and its table in docs/recipes.md, saves the model with ``save_pretrained`` to
runs/pointing_only/final (``MolmoLite.from_pretrained`` and ``generate`` then answer Molmo's pointing and counting
prompts), and ends with one line:

    pointing_only: pointing_f1=<f> counting_exact=<f> shuffled_f1=<f> train_minutes=<f> heldout=<n>

One run at a time on a 2-core machine.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.common import machine_info
from benchmarks.oracle import harness_main, record_key, save_record
from molmo_lite.pointing_only import EyesConfig, train_eyes

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "pointing_only.json"
FINAL = ROOT / "runs" / "pointing_only" / "final"

# Molmo's single-crop mode with one token per 7 px cell (e19 on): with the oracle's eyes, and with the frozen
# per-cell ViT `vit_p7_cell1`
ORACLE_CELLS = {"patch_size": 7, "crop_mode": "resize", "pooling": (1, 1), "eyes": "oracle"}
CELL1 = {"patch_size": 7, "crop_mode": "resize", "pooling": (1, 1), "lr_vit": 0.0,
         "vision_init": "data_samples/backbones/vit_p7_cell1"}
# the claim ViT, its own head deciding each cell in the connector (``EyesConfig.cell_decisions``)
CLAIM = CELL1 | {"vision_init": "data_samples/backbones/vit_p7_claim", "cell_decisions": True}
CLAIM_POOL = CLAIM | {"scene_pool": 2048, "cache_features": True}  # e37: a pool of scenes, the frozen eyes run once each
# e45 on: the claim ViT trained longer (`vit_p7_claim2`) and e43's linear start of the projector
CLAIM2 = CLAIM_POOL | {"linear_projector": 0.35, "vision_init": "data_samples/backbones/vit_p7_claim2"}

# name -> (what it changes, relative to the configuration it names; the EyesConfig fields it sets)
CONFIGS: dict[str, tuple[str, dict]] = {
    "e0-tiny": ("the course's tiny image path as it is (56 px scene, crops of 56 px, patches of 14 px, 2 x 2 "
                "pooling: 8 image tokens) with the oracle's o16 recipe, everything trained from a random start", {}),
    "e1-patch7": ("e0 with patches of 7 px (8 x 8 per crop, the oracle's cell): 2 x 2 pooling gives 16 tokens per "
                  "crop, 32 with the overview, each over 14 px", {"patch_size": 7}),
    "e2-patch7-pool1": ("e1 without pooling (1 x 1): 64 tokens per crop, one per 7 px cell as the oracle's, 128 with "
                        "the overview", {"patch_size": 7, "pooling": (1, 1)}),
    "e3-patch7-captions": ("e1 with a quarter of the rows a dense caption instead: every object of the scene, its "
                           "colour, shape and position in Molmo's 0-100 units, in the image tokens' raster order "
                           "(what Molmo's stage-1 captions do in words)", {"patch_size": 7, "caption_rate": 0.25}),
    "e4-patch7-dense-vit": ("e1 starting from a ViT pre-trained on images and captions only (`pretrain_vit`: the "
                            "whole tiny Molmo writing every scene's dense caption for 20 minutes, then only its ViT "
                            "kept, as Molmo keeps CLIP's); its minutes are not the run's",
                            {"patch_size": 7, "vision_init": "data_samples/backbones/vit_p7_dense"}),
    "e5-patch7-dense-vit-frozen": ("e4 with the pre-trained ViT frozen (learning rate 0): no ViT backward or update, "
                                   "more steps in the same minutes, its features kept as pre-training left them",
                                   {"patch_size": 7, "vision_init": "data_samples/backbones/vit_p7_dense",
                                    "lr_vit": 0.0}),
    "e6-scene112-frozen": ("e5 with the same scenes drawn at 112 px: Molmo's overview (the scene shrunk to one crop "
                           "of 56 px, 16 tokens) and 2 x 2 overlapping crops at full resolution (49 tokens, each over "
                           "16 px of the 112, about the oracle's cell); the frozen ViT saw only 56 px scenes",
                           {"patch_size": 7, "scene_size": 112, "vision_init": "data_samples/backbones/vit_p7_dense",
                            "lr_vit": 0.0}),
    "e7-dense60-frozen": ("e5 with the ViT pre-trained three times as long (60 minutes of dense captions: e5's 20, "
                          "then 40 more from its ViT with a fresh connector and LLM)",
                          {"patch_size": 7, "vision_init": "data_samples/backbones/vit_p7_dense60", "lr_vit": 0.0}),
    "e8-dense60-frozen-pool1": ("e7 without pooling: 64 tokens per crop, one per 7 px cell as the oracle's (128 with "
                                "the overview)", {"patch_size": 7, "pooling": (1, 1), "lr_vit": 0.0,
                                                  "vision_init": "data_samples/backbones/vit_p7_dense60"}),
    "e9-dense60-frozen-1crop": ("e7 with at most one crop beside the overview: the same tokens for chapter 07's 56 px "
                                "scenes (their one crop is the whole scene), and a larger image shrunk to that crop "
                                "instead of cut into 2 x 2 crops the model never trained on (the shift check's 112 px)",
                                {"patch_size": 7, "max_crops": 1, "lr_vit": 0.0,
                                 "vision_init": "data_samples/backbones/vit_p7_dense60"}),
    "e10-dense60-vit1e-4-1crop": ("e9 with the pre-trained ViT learning at a tenth of the LLM's rate (1e-4) instead "
                                  "of frozen", {"patch_size": 7, "max_crops": 1, "lr_vit": 1e-4,
                                                "vision_init": "data_samples/backbones/vit_p7_dense60"}),
    "e11-cells8-frozen-1crop": ("e9 with a ViT pre-trained for 8 minutes to say what is in each cell "
                                "(`pretrain_vit_cells`: the mean of its features over each 2 x 2 window, through a "
                                "linear head, gives the colour or 'empty', shape, offset, row and column of the "
                                "window's four cells; pixel noise on half the scenes), frozen",
                                {"patch_size": 7, "max_crops": 1, "lr_vit": 0.0,
                                 "vision_init": "data_samples/backbones/vit_p7_cells8"}),
    "e12-cells25-frozen-1crop": ("e11 with the cell pre-training run 25 minutes (shipped)",
                                 {"patch_size": 7, "max_crops": 1, "lr_vit": 0.0,
                                  "vision_init": "data_samples/backbones/vit_p7_cells"}),
    "e13-cells25-frozen-pool1": ("e12 without pooling: one token per 7 px cell as the oracle's (64 per crop, 128 with "
                                 "the overview); the cell pre-training asked each patch for its own cell",
                                 {"patch_size": 7, "max_crops": 1, "pooling": (1, 1), "lr_vit": 0.0,
                                  "vision_init": "data_samples/backbones/vit_p7_cells"}),
    "e14-cells25-frozen-meanpool": ("e12 with the attention pooling starting as the window's mean (its query "
                                    "projection at 0): with the default initialisation it starts peaked on one "
                                    "patch of the four (largest weight 0.64 on average), losing what the cell "
                                    "pre-training put in the others",
                                    {"patch_size": 7, "max_crops": 1, "lr_vit": 0.0, "uniform_pooling": True,
                                     "vision_init": "data_samples/backbones/vit_p7_cells"}),
    "e15-dense60-frozen-1crop-pool": ("e9 (the default) with its scenes sampled from a pool of 2,048 drawn and "
                                      "preprocessed once, 4 replaced by new ones per step (`scene_pool`): cheaper "
                                      "steps, each scene seen about 4 times",
                                      {"patch_size": 7, "max_crops": 1, "lr_vit": 0.0, "scene_pool": 2048,
                                       "fresh_scenes": 4, "vision_init": "data_samples/backbones/vit_p7_dense60"}),
    "e16-oracle-eyes-1crop": ("the diagnostic: e12's path with the ViT replaced by the oracle's features of each "
                              "patch's cell (`OracleEyes`), through the real connector from random (attention "
                              "pooling of 2 x 2 windows, SwiGLU projector) and the real token layout (overview and "
                              "crop, 32 tokens); against o17 (the same windows, 16 tokens, through a "
                              "Linear-GELU-Linear) and e12 (the ViT's features)",
                              {"patch_size": 7, "max_crops": 1, "eyes": "oracle"}),
    "e17-oracle-eyes-slots": ("e16 with the attention pooling starting as `slot_pooling`: each of its 4 heads takes "
                              "one cell of the window whole, so its output lists the four cells side by side as "
                              "o17's tokens do, where a random pooling mixes them (a red square beside a blue "
                              "circle sums as a red circle beside a blue square)",
                              {"patch_size": 7, "max_crops": 1, "eyes": "oracle", "slot_pooling": True}),
    "e18-cellpool-frozen-1crop": ("e12 with its ViT and Molmo's attention pooling pre-trained together for 10 more "
                                  "minutes (`pretrain_vit_cells(pooling=True)`: the cell head reads the pooled vector "
                                  "instead of the window's mean, so the pooling must keep the four cells apart, as "
                                  "e17's does by construction), both frozen; the projector and the LLM from random",
                                  {"patch_size": 7, "max_crops": 1, "lr_vit": 0.0, "lr_pool": 0.0,
                                   "vision_init": "data_samples/backbones/vit_p7_cellpool",
                                   "pooling_init": "data_samples/backbones/vit_p7_cellpool"}),
    "e19-oracle-eyes-resize-cells": ("e16 in Molmo's single-crop mode (`crop_mode=\"resize\"`: the overview alone, "
                                     "no copy of it as a crop) without pooling: 64 tokens, one per 7 px cell, o16's "
                                     "layout, through the real connector (its pooling of one patch is a linear map) "
                                     "and SwiGLU projector",
                                     ORACLE_CELLS),
    "e20-cell1-frozen-resize": ("e19 with real eyes: `vit_p7_cells`'s ViT trained 8 more minutes to say what is in "
                                "each patch's own cell (the cell objective without pooling), frozen; 64 tokens, the "
                                "overview alone",
                                CELL1),
    "e22-cell1-readout-resize": ("e20 with the pooling (a linear map for one patch) starting as the least-squares "
                                 "read-out of each cell's colour, shape, offset, row and column from the frozen ViT's "
                                 "features (`readout_pooling`, fitted on 512 fresh scenes in about 2 seconds, counted "
                                 "in the minutes) and frozen: the projector starts from what e19's oracle gives it, "
                                 "with the ViT's errors",
                                 CELL1 | {"lr_pool": 0.0, "readout_init": 512}),
    "e23-cell1-aligned-resize": ("e20 with the connector starting as e19's oracle connector read through the frozen "
                                 "ViT (`align_connector`: the least-squares read-out of the cells composed with a "
                                 "fresh oracle connector, then 1,000 AdamW steps on 1,024 scenes fitting that "
                                 "connector's tokens; about 40 s, counted in the minutes); the connector then trains "
                                 "as e19's",
                                 CELL1 | {"align_scenes": 1024, "align_steps": 1000}),
    "e24-readout-eyes-position": ("diagnostic: e19's setup (connector from random reading cell features, 64 tokens) "
                                  "with the features read out of the frozen `vit_p7_cell1` by e22's least-squares map "
                                  "(`ReadoutEyes`), its row and column replaced by the patch's own exact ones: the "
                                  "ViT's colour, shape and offset with perfect positions",
                                  CELL1 | {"eyes": "readout-position", "readout_init": 1024}),
    "e26-readout-eyes-clean": ("diagnostic: e24 with the read-out's decisions made sharp: a cell whose largest colour "
                               "channel passes 0.3 gets the one-hots of its largest colour and shape (and its offset), "
                               "any other cell zeros - the ViT's errors kept, its soft values gone",
                               CELL1 | {"eyes": "readout-clean", "readout_init": 1024}),
    "e27-cell1-readout-pool": ("e22 with its scenes sampled from a pool of 2,048 (4 new per step) whose frozen ViT "
                               "features are computed once, when a scene is drawn (`cache_features`): about a "
                               "quarter less time per step once the pool is drawn",
                               CELL1 | {"lr_pool": 0.0, "readout_init": 512, "scene_pool": 2048,
                                        "cache_features": True}),
    "e28-readout-eyes-classes": ("diagnostic: e26 with the decisions made by softmax read-outs of colour-or-empty "
                                 "and of shape (fitted by L-BFGS on the same 1,024 scenes, as the cell objective's "
                                 "head decides) instead of a threshold on the least-squares colours",
                                 CELL1 | {"eyes": "readout-classes", "readout_init": 1024}),
    "e29-oracle-eyes-offset-noise": ("diagnostic: e19 (oracle eyes) with each object's offset misjudged as the "
                                     "linear read-out of the ViT misjudges it (Gaussian, 0.13 cells: a mean error of "
                                     "0.107 cells, 1.3 of Molmo's units), everything else exact",
                                     ORACLE_CELLS | {"oracle_offset_noise": 0.13}),
    "e30-oracle-eyes-cell-errors": ("diagnostic: e19 (oracle eyes) with e28's kind of mistakes: each object's cell "
                                    "read empty with probability 0.08, each empty neighbour of an object given its "
                                    "colour and shape with probability 0.05 (about 2% of the empty cells), "
                                    "everything else exact",
                                    ORACLE_CELLS | {"oracle_cell_errors": (0.08, 0.05)}),
    "e31-dense60-readout-resize": ("e22 with the dense-caption ViT `vit_p7_dense60` (e9's) in place of "
                                   "`vit_p7_cell1`: its softmax read-out misses 2.6% of the objects' cells and reads "
                                   "0.3% of empty cells occupied, where cell1's misses 5.7% and reads 0.7%",
                                   CELL1 | {"lr_pool": 0.0, "readout_init": 512,
                                            "vision_init": "data_samples/backbones/vit_p7_dense60"}),
    "e32-oracle-eyes-shared": ("diagnostic: e19 (oracle eyes) with no hard borders between cells: an object whose "
                               "centre lies within 0.15 cells (1 px) of a border is shared with the cell across it, "
                               "half each at the border (`cell_features(share=0.15)`, about half the objects). The "
                               "real eyes' misses lie there (83% of `vit_p7_dense60`'s within 0.05 cells of a "
                               "border): eyes can learn how much of an object lies on each side, not on which side "
                               "its centre lies to a fraction of a pixel",
                               ORACLE_CELLS | {"cell_share": 0.15}),
    "e33-dense60-readout-shared": ("e31 with the read-out fitted to e32's cells without hard borders "
                                   "(`cell_share=0.15`): the linear read-out of `vit_p7_dense60` misses the shared "
                                   "cells' values by more than 0.3 on 1.1% of the cells, where it misses the hard "
                                   "cells' on 2.0%",
                                   CELL1 | {"lr_pool": 0.0, "readout_init": 512, "cell_share": 0.15,
                                            "vision_init": "data_samples/backbones/vit_p7_dense60"}),
    "e34-claim-head-eyes": ("e19's setup (connector from random reading cell features, 64 tokens) with the cells "
                            "decided by `vit_p7_claim`'s own head, frozen, first in the connector (`cell_decisions`, "
                            "`CellDecisions`: the one-hots of the colour and shape it names, its offset, the patch's "
                            "row and column): `vit_p7_cell1` trained 12 "
                            "more minutes to claim each object in exactly one cell, either side of a border when its "
                            "centre lies within 0.15 cells of one (`claim_losses`); held out it claims 97.3% of the "
                            "objects once, misses 1.4%, claims 1.25% twice, where the centre's-cell objective's "
                            "read-outs miss 7-10%",
                            CLAIM),
    "e35-oracle-eyes-claims": ("diagnostic: e19 (oracle eyes) with e34's rule of claims and none of its mistakes: "
                               "an object whose centre lies within 0.15 cells of a border is put in a cell picked at "
                               "random on either side, its offset from that cell's middle (`claimed_cells`)",
                               ORACLE_CELLS | {"oracle_claim_margin": 0.15}),
    "e36-oracle-eyes-few-errors": ("diagnostic: e30 with e34's error rates instead of e28's: each object's cell read "
                                   "empty with probability 0.015, each empty neighbour of an object given its colour "
                                   "and shape with probability 0.003 (about 0.1 phantom a scene)",
                                   ORACLE_CELLS | {"oracle_cell_errors": (0.015, 0.003)}),
    "e37-claim-head-eyes-pool": ("e34 with e27's pool: 2,048 scenes, 4 new per step, each through the frozen eyes "
                                 "once, when drawn (`cache_features`)",
                                 CLAIM_POOL),
    "e38-claim-head-pooling": ("e37 inside Molmo's design: the ViT's own features through the real connector, "
                               "its pooling (a linear map for one patch) starting as `vit_p7_claim`'s cell head, "
                               "each output standardised on 256 scenes (`head_pooling`), and frozen; the projector "
                               "from random reads the head's scores where e37's read its one-hot decisions",
                               CELL1 | {"vision_init": "data_samples/backbones/vit_p7_claim", "head_init": 256,
                                        "lr_pool": 0.0, "scene_pool": 2048, "cache_features": True}),
    "e39-claim-head-eyes-anneal": ("e37 with the learning rate annealed to a tenth of its peak by the end (`final_lr` "
                                   "0.1 where every run so far ended its cosine at 0.55): counting needs every point "
                                   "of a crowded scene right, and a low final rate sharpens what was learnt",
                                   CLAIM_POOL | {"final_lr": 0.1}),
    "e40-claim-two-questions": ("e37 with each scene of a step asked two different questions (`questions_per_scene` "
                                "2: 8 scenes of the pool a step, each in two rows, pointing at one class and counting "
                                "it or pointing at another): the batch shows one image answering two questions "
                                "differently, the binding of words to cells the LLM is slow to learn",
                                CLAIM_POOL | {"questions_per_scene": 2}),
    "e41-claim-eight-views": ("e37 with 2 new scenes per step instead of 4 (`fresh_scenes`): each scene of the pool "
                              "seen about 8 times instead of 4, each time asked a question drawn anew; e37 against "
                              "e34 (4 views against 1) is the largest step the real eyes have made",
                              CLAIM_POOL | {"fresh_scenes": 2}),
    "e42-claim-captions": ("e37 with a fifth of the rows a dense caption (`caption_rate` 0.2: every object's colour, "
                           "shape and position in the image tokens' raster order, Molmo's stage 1 in the oracle's "
                           "words): reading each cell's coordinates out in order is the easy half of pointing, and "
                           "may end the plateau sooner",
                           CLAIM_POOL | {"caption_rate": 0.2}),
    "e43-claim-linear-projector": ("e37 with Molmo's SwiGLU projector starting as a linear map of the pooled vector "
                                   "(`linear_projector`: a constant gate silu(0.35), so the image embeddings' mean "
                                   "norm starts about o16's, 0.9): from random, SwiGLU multiplies two linear maps of "
                                   "a cell's one-hots (colour x row x column products), where o16's "
                                   "Linear-GELU-Linear, which learns the task in 1,500 steps, starts near a sum of "
                                   "one vector each",
                                   CLAIM_POOL | {"linear_projector": 0.35}),
    "e44-oracle-eyes-linear-projector": ("diagnostic: e19 (perfect cells through Molmo's connector) with e43's "
                                         "linear start of the projector: how much of o16's lead (0.96 / 0.94 "
                                         "against e19's 0.90 / 0.74 the same hour) the start closes",
                                         ORACLE_CELLS | {"linear_projector": 0.35}),
    "e45-claim2-linear-projector": ("e43 with `vit_p7_claim2`'s eyes: `vit_p7_claim` trained 15 more minutes (its "
                                    "head kept, peak learning rate 5e-4); a perfect reader of its decisions counts "
                                    "0.925 of the 200 held-out scenes right where `vit_p7_claim`'s allow 0.850 "
                                    "(`reader_ceiling`)",
                                    CLAIM2),
    "e46-claim2-connector-lr3e-3": ("e45 with the connector (pooling and projector) at 3e-3, three times the LLM's "
                                    "rate: through Molmo's connector perfect cells climb about 250 steps after "
                                    "o16's Linear-GELU-Linear (e19), a connector of five matrices where o16 has two",
                                    CLAIM2 | {"lr_connector": 3e-3}),
    "e47-claim2-connector-lr3e-4": ("e45 with the connector (pooling and projector) at 3e-4, a third of the LLM's "
                                    "rate: e46's 3e-3 climbs later than e45",
                                    CLAIM2 | {"lr_connector": 3e-4}),
    "e48-claim2-connector-frozen": ("e45 with the connector frozen at its linear start (`lr_connector` 0): each "
                                    "image token a fixed random linear code of the cell's decisions (one vector per "
                                    "colour, shape, row and column, plus the offset's), which the LLM alone learns "
                                    "to read; e46 (3e-3) against e45 (1e-3) says a connector that moves faster "
                                    "delays the binding",
                                    CLAIM2 | {"lr_connector": 0.0}),
    "e49-claim2-connector-lr1e-4": ("e45 with the connector at 1e-4, a tenth of the LLM's rate: between e47's "
                                    "3e-4 and e48's frozen connector",
                                    CLAIM2 | {"lr_connector": 1e-4}),
    "e50-claim2-slow-connector-anneal": ("e47 with the learning rate annealed to a tenth of its peak by the end "
                                         "(`final_lr` 0.1, e39's): with the slow connector the climb is over by "
                                         "minute 8, and the last minutes sharpen what was learnt",
                                         CLAIM2 | {"lr_connector": 3e-4, "final_lr": 0.1}),
    "e51-claim2-frozen-connector-anneal": ("e48 (the connector frozen at its linear start) with e50's anneal to a "
                                           "tenth: the two best counts without the anneal were e48's and e47's",
                                           CLAIM2 | {"lr_connector": 0.0, "final_lr": 0.1}),
    "e52-e51-features-clocks": ("e51 with the claim ViT's features (normalised, scaled to about the decisions' "
                                "norm) handed on beside the decisions (`decision_features` 0.15) and a quarter of "
                                "the rows a clock to read (`clock_rate` 0.25): do the eyes serve a second skill "
                                "without costing the first?",
                                CLAIM2 | {"lr_connector": 0.0, "final_lr": 0.1, "decision_features": 0.15,
                                          "clock_rate": 0.25}),
    "e53-e52-quieter-features": ("e52 with the features scaled to a third of the decisions' norm "
                                 "(`decision_features` 0.05): e52's features cost the pointing half its F1",
                                 CLAIM2 | {"lr_connector": 0.0, "final_lr": 0.1, "decision_features": 0.05,
                                           "clock_rate": 0.25}),
    "e54-e51-clocks": ("the control of e52: e51 with a quarter of the rows a clock, the decisions alone (no "
                       "features): is it the clocks or the features that slow the pointing?",
                       CLAIM2 | {"lr_connector": 0.0, "final_lr": 0.1, "clock_rate": 0.25}),
    "e55-e52-feature-basis": ("e52 with only the features' 16 main components (whitened, `feature_dims` 16, "
                              "`decision_features` 0.5: about the decisions' norm) beside the decisions: 29 + 16 "
                              "channels fit the pooling's 96 without being mixed into each other",
                              CLAIM2 | {"lr_connector": 0.0, "final_lr": 0.1, "decision_features": 0.5,
                                        "feature_dims": 16, "clock_rate": 0.25}),
    "e56-e55-fainter-basis": ("e55 with the 16 components at 0.2 (about 0.8 of norm against the decisions' 2): "
                              "the clocks from the basis with less of e55's cost to the pointing?",
                              CLAIM2 | {"lr_connector": 0.0, "final_lr": 0.1, "decision_features": 0.2,
                                        "feature_dims": 16, "clock_rate": 0.25}),
}
DEFAULT = "e51-claim2-frozen-connector-anneal"  # the real path nearest the target (docs/recipes.md)

# vision_init folders the harness builds when missing: folder -> molmo_lite.pointing_only's command-line arguments
# (an --init folder is built first when it is missing too)
PRETRAINED = {
    "data_samples/backbones/vit_p7_dense": ["--minutes", "20", "--patch-size", "7"],
    "data_samples/backbones/vit_p7_dense60": ["--minutes", "40", "--patch-size", "7",
                                              "--init", "data_samples/backbones/vit_p7_dense"],
    "data_samples/backbones/vit_p7_cells8": ["--objective", "cells", "--minutes", "8", "--patch-size", "7",
                                             "--max-crops", "1", "--noise", "30"],
    "data_samples/backbones/vit_p7_cells": ["--objective", "cells", "--minutes", "25", "--patch-size", "7",
                                            "--max-crops", "1", "--noise", "30"],
    "data_samples/backbones/vit_p7_cellpool": ["--objective", "cells", "--minutes", "10", "--patch-size", "7",
                                               "--max-crops", "1", "--noise", "30", "--pooling",
                                               "--init", "data_samples/backbones/vit_p7_cells"],
    "data_samples/backbones/vit_p7_cell1": ["--objective", "cells", "--minutes", "8", "--patch-size", "7",
                                            "--crop-mode", "resize", "--pool", "1", "--noise", "30",
                                            "--init", "data_samples/backbones/vit_p7_cells"],
    "data_samples/backbones/vit_p7_claim": ["--objective", "cells", "--minutes", "12", "--patch-size", "7",
                                            "--crop-mode", "resize", "--pool", "1", "--noise", "30",
                                            "--margin", "0.15", "--init", "data_samples/backbones/vit_p7_cell1"],
    "data_samples/backbones/vit_p7_claim2": ["--objective", "cells", "--minutes", "15", "--patch-size", "7",
                                             "--crop-mode", "resize", "--pool", "1", "--noise", "30",
                                             "--margin", "0.15", "--init-head", "--lr", "5e-4",
                                             "--init", "data_samples/backbones/vit_p7_claim"],
}


def pretrained(folder: str) -> dict:
    """The ViT folder a vision_init names, pre-trained first (``python -m molmo_lite.pointing_only``) when it is
    missing; returns that pre-training's summary (its minutes are not the harness's)."""
    path = ROOT / folder
    if not (path / "model.safetensors").exists():
        from molmo_lite import pointing_only

        args = list(PRETRAINED[folder])
        if "--init" in args:  # the pre-training it goes on from, built first when it is missing
            k = args.index("--init") + 1
            pretrained(args[k])
            args[k] = str(ROOT / args[k])
        print(f"{folder} is missing: pre-training it ({' '.join(PRETRAINED[folder])})", flush=True)
        pointing_only.main(args + ["--out", str(path)])
    return json.loads((path / "config.json").read_text())["pretrain"]


def run(name: str, minutes: float, heldout: int, evals: int, threads: int = 2, seed: int = 0) -> dict:
    lever, fields = CONFIGS[name]
    fields = fields | {"seed": seed}
    summary = None
    if fields.get("vision_init"):
        summary = pretrained(fields["vision_init"])
        fields = fields | {"vision_init": str(ROOT / fields["vision_init"])}
    if fields.get("pooling_init"):  # saved beside its ViT by the same pre-training
        pretrained(fields["pooling_init"])
        fields = fields | {"pooling_init": str(ROOT / fields["pooling_init"])}
    record = train_eyes(EyesConfig(**fields), minutes=minutes, heldout=heldout, evals=evals, threads=threads)
    if summary:
        record["config"]["vision_init"] = CONFIGS[name][1]["vision_init"]  # the repository's path
        record["config"]["pooling_init"] = CONFIGS[name][1].get("pooling_init")
        record["pretrain"] = summary
    model = record.pop("model")
    saved = None
    if record["config"]["eyes"] == "vit":  # oracle eyes are a diagnostic, not a model that reads images
        FINAL.parent.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(FINAL)
        saved = str(FINAL.relative_to(ROOT))
    record.update(name=name, lever=lever, machine=machine_info(), saved=saved)
    return save_record(OUT, record_key(name, minutes, seed), record)


def main(argv: list[str] | None = None) -> None:
    r = harness_main(argv, __doc__, CONFIGS, DEFAULT, run, OUT, "pointing_only")
    if r:
        final = r["final"]
        print(f"pointing_only: pointing_f1={final['pointing_f1']:.3f} counting_exact={final['counting_exact']:.3f} "
              f"shuffled_f1={r['shuffled']['pointing_f1']:.3f} train_minutes={r['train_minutes']:.2f} "
              f"heldout={r['heldout']}")


if __name__ == "__main__":
    main()
