"""The host adapter: everything this pack knows about ComfyUI's internals, in one place.

ComfyUI's public interfaces change slowly: ``comfy_api.latest.io`` for nodes, and for model
patching ``ModelPatcher.clone()`` / ``set_model_attn1_*``, keyed wrappers and
``comfy.sample`` / ``comfy.samplers``. Its private conventions change with releases: the
keys of ``transformer_options`` / ``extra_options``, the UNet's block attributes, model,
ControlNet and VAE configuration, other packs' keys (AnimateDiff-Evolved's ``ad_params``),
core's context windows. This package is the only code in the pack that reads them; the
rest asks it, so a host update or a new model family is a change here only
(tests/unit/test_architecture.py enforces it).

- ``calls``: one model call's options (step, layer, token grid, frames, heads) and this
  pack's state in a model's options;
- ``models``: model families (``family_of``: which architecture, its transformer blocks,
  downsampling and latent scale), latent spaces, noise schedules, the weights' fingerprint;
- ``conditioning``: CONDITIONING and ControlNet internals, cut to a crop of the latent;
- ``runtime``: progress and interruption, devices and memory, sampler/scheduler lists,
  messages to the browser, prompt tokens.

Every ComfyUI import is inside a function, so ``ocd`` imports without ComfyUI.
"""
from .calls import (ATTENTION_HOOK_KEY, CROSS_ATTENTION_RECORD_KEY, CROSS_FRAME_KEY, DIT_CALL_KEY, DIT_RUN_KEY, FEATURE_CACHE_KEY,
                    FEATURE_REUSE_KEY, RUN_REPORT_KEY, STEP_SCHEDULE_KEY, TOKEN_MERGE_KEY, TOKEN_STEPS_KEY,
                    activation_grid, attention_heads, attention_precision, attn1_replace_of, batch_identity, block_of,
                    call_sigma, call_state, cfg_groups, cond_batch_window, context_window, context_window_schedule_length,
                    frame_layout, guider_has_controlnet, guider_options,
                    guider_state, has_patch, layer_of, pop_state, put_state, run_latent, run_sigmas, stash, state_of, step_index, take, token_grid, with_step_callback)
from .conditioning import crop_conditioning
from .models import (FAMILIES, DiffusionCall, ModelFamily, ReusePoints, SDUNet, TokenGrid, WanDiT, WorkCounter,
                     cross_attention_modules,
                     diffusion_call, downsampling, family_of, ksampler_sigmas, latent_scale, model_fingerprint,
                     network_family, network_of, noise_reaching, noise_scaling, ode_sampler, schedule_sigmas, self_attention_keys, to_model_space,
                     to_user_space, transformer_blocks)
from .runtime import (Progress, check_interrupted, compute_device, free_memory, intermediate_device,
                      prompt_token_ids, sampler_names, sampler_progress, scheduler_names, send_to_ui)

