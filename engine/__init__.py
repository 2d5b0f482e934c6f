"""How GPT-3 Works: the course engine.

A GPT-3-style decoder in NumPy (CuPy on a GPU), laid out like the book:

=================  ==========================================  ===========
module             what it holds                               chapter
=================  ==========================================  ===========
``data``           corpora, sliding-window examples, batches   2 Training
``optim``          AdamW, learning-rate schedule               2 Training
``evaluate``       held-out loss, bits per byte, ensembles     2 Training
``train``          the training loop, teachers, command line   2 Training
``distill``        learning from teachers' predictions         2 Training
``calibrate``      temperature scaling of the logits           2 Training
``checkpoint``     safe (atomic, hashed) checkpoints           2 Training
``pretrained``     the shipped Shakespeare model               2 Training
``export``         a training run -> the shipped assets        2 Training
``model_card``     the shipped model's card                    2 Training
``tokenizer``      GPT-3's BPE through tiktoken; files         3 Tokens
``encoding``       special tokens, streaming encoding          3 Tokens
``bpe``            training a small byte-level BPE             3 Tokens
``config``         GPTConfig, presets, counting                4 Parameters
``layers``         LayerNorm, GELU, softmax, attention, block  5 Layers
``losses``         cross-entropy, the distillation loss        5 Layers
``params``         parameter trees, initialisation             5 Layers
``decoder``        the one forward pass, and its backward      5 Layers
``model``          GPT: the decoder, X-ray, gradients          5 Layers
``attention``      dense, banded, strided, fixed layouts       6 Sparse attention
``generate``       sampling, KV cache                          7 Generation
``finetune``       fine-tuning, few-shot, the shipped adapter  8 Fine-tuning
``finetune_data``  the task: descriptions -> HTML, its words   8 Fine-tuning
``lora``           LoRA adapters: forward, backward, merge     8 Fine-tuning
``loading``        load_model(source): every model folder      Appendix
``hf``             Hugging Face GPT-2 weights in and out       Appendix
``onnx``           the decoder as an ONNX graph (deploying)    Appendix
``onnx_graph``     the graph's nodes, layer by layer           Appendix
``backend``        NumPy / CuPy                                Appendix
``kernels``        fused passes (speed, not ideas)             Appendix
``gemv``           one-row products, the kernel measured       Appendix
``grad_kernels``   the backward passes' fused twins            Appendix
``threads``        the thread pool, the BLAS kept serial       Appendix
``memory``         malloc tuning, large arrays kept for reuse  Appendix
``files``          hashes, atomic writes                       Appendix
``units``          big numbers for people (123.5 B)            Command line
=================  ==========================================  ===========

Modules import only downward (``tests/test_architecture.py``); see the README.
"""
from . import kernels, memory
from .attention import attention_mask
from .backend import get_xp, to_numpy
from .config import GPTConfig, PRESETS
from .hf import load_hf_gpt2, save_hf_gpt2, to_hf_state_dict
from .model import GPT
from .loading import load_pretrained
from .tokenizer import get_encoding

__all__ = ["GPT", "GPTConfig", "PRESETS", "attention_mask", "get_encoding", "get_xp", "load_hf_gpt2",
           "load_pretrained", "save_hf_gpt2", "to_hf_state_dict", "to_numpy"]
__version__ = "0.1.0"

memory.reuse_freed_memory()  # fresh pages for every layer's arrays cost 20-30% of a step: see its docstring
